"""Salesforce-style 15/18-character record ids with the case-safe checksum suffix."""

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
MASTER_RECORD_TYPE_ID = "012000000000000AAA"
_UPPER_FLAGS = str.maketrans({ch: ("1" if "A" <= ch <= "Z" else "0") for ch in ALPHABET})


def to18(id15: str) -> str:
    """Append the checksum Salesforce uses to make ids case-insensitive-safe."""
    if len(id15) == 18:
        return id15
    flags = id15.translate(_UPPER_FLAGS)
    return id15 + "".join(_SUFFIX[int(flags[i:i + 5][::-1], 2)] for i in (0, 5, 10))


def make_id(prefix: str, number: int, pod: str = "5g") -> str:
    digits = ""
    while number:
        number, rem = divmod(number, 62)
        digits = ALPHABET[rem] + digits
    return to18(prefix + pod + "0" + digits.rjust(9, "0"))


def normalize(record_id: str) -> str:
    return to18(record_id) if len(record_id) == 15 else record_id
