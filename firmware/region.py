# Region codes (统计用区划代码) and prefixes: alerts.md §3 "Region codes".

_CUTS = (12, 9, 6, 4, 2)  # group boundaries: province 2, city 2, county 2, town 3, village 3


def valid_code(code):
    """A 12-digit code whose province is not 00."""
    return isinstance(code, str) and len(code) == 12 and code.isdigit() and code[:2] != "00"


def prefix(code):
    """The code with trailing all-zero groups removed, cutting only at group boundaries."""
    end = 12
    for i in range(4):
        start = _CUTS[i + 1]
        if code[start:end].strip("0"):
            break
        end = start
    return code[:end]


def prefixes(code):
    """The five topic prefixes of a terminal's code, shortest first (alerts.md §6)."""
    return [code[:n] for n in (2, 4, 6, 9, 12)]


def covers(region_code, terminal_code):
    return terminal_code.startswith(prefix(region_code))


def within(region_code, scope):
    p = prefix(region_code)
    for s in scope:
        if p.startswith(s):
            return True
    return False
