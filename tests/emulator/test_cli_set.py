"""`python -m salesforce_emulator set`: change a record of a running emulator from a shell."""

import pytest

from salesforce_emulator.__main__ import main


def _lead(emulator):
    return next(r for r in emulator.org.records("Lead") if not r["IsConverted"])


def test_set_changes_the_record_and_moves_its_modstamp(emulator, capsys):
    lead = _lead(emulator)
    before = lead["SystemModstamp"]

    code = main(["set", "--data-dir", str(emulator.data_dir), "Lead", lead["Id"],
                 "Status=Disqualified", "Company=Acme Ltd"])

    assert code == 0
    after = emulator.org.get_record("Lead", lead["Id"])
    assert (after["Status"], after["Company"]) == ("Disqualified", "Acme Ltd")
    assert after["SystemModstamp"] >= before
    assert capsys.readouterr().out.strip() == (
        f"Lead {lead['Id']}: Status = 'Disqualified', Company = 'Acme Ltd'"
    )


def test_set_reports_what_the_emulator_refused(emulator, capsys):
    code = main(["set", "--data-dir", str(emulator.data_dir), "Lead", "00Q000000000000AAA",
                 "Status=Disqualified"])
    assert code == 1
    assert "The emulator refused" in capsys.readouterr().err


def test_set_needs_field_equals_value(emulator):
    with pytest.raises(SystemExit) as exited:
        main(["set", "--data-dir", str(emulator.data_dir), "Lead", "00Q", "Status"])
    assert exited.value.code == 2


def test_set_without_a_running_emulator_says_so(tmp_path, capsys):
    assert main(["set", "--data-dir", str(tmp_path), "Lead", "00Q", "Status=x"]) == 1
    assert "No running emulator's credentials" in capsys.readouterr().err
