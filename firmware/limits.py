# Every limit the terminal applies to an envelope: the one place firmware and host tools read them.
# Plain integers (no const): the host's tools/envelope.py imports this very file under CPython, so
# a host tool can never sign what a terminal rejects (docs/decisions.md "Limits").

# alerts.md §1
MAX_ENVELOPE = 8192  # bytes of the whole envelope (also the most a crt may be)

# alerts.md §3, the spec's own limits
MAX_ID = 64  # chars of an alert id (A-Z a-z 0-9 . _ : -)
MAX_KID = 64  # chars of a key id
MAX_EVENT = 16  # chars of `event`
MAX_TEXT = 1024  # chars of `text`
MAX_REGIONS = 64  # region codes in one alert
MAX_LIFETIME = 604800  # s: expires <= issued + 7 days
LEVEL_MIN = 1
LEVEL_MAX = 4
VOLUME_MAX = 100
REPEAT_MIN = 1
REPEAT_MAX = 20
MAX_FUTURE = 300  # s an alert may be issued ahead of the terminal's clock (§4 rule 9)

# Where the spec sets no bound, the terminal's own (docs/decisions.md "Limits")
MAX_REFS = 64  # ids in a cancel's `refs`
MIN_EPOCH = 0  # issued, expires, a certificate's nbf and exp: epoch seconds ...
MAX_EPOCH = 4294967295  # ... up to 2**32 - 1 (2106-02-07), beyond is bad_field / bad_cert
MAX_URL = 512  # chars of a clip URL, which must start with http://
MIN_CLIP = 44  # bytes: a RIFF WAV header with no sample
MAX_CLIP = 1048576  # bytes per clip: about 32 s of 16 kHz 16-bit mono (a bigger one plays the siren)
MAX_CLIP_FIELD = 2147483647  # `bytes` above this is not a size at all: bad_field
MAX_SCOPE = 16  # region prefixes in a certificate's scope
MAX_USES = 8  # entries in a certificate's use

# ota.md §1 (a release manifest) and our own bounds where it sets none (docs/ota.md)
MAX_MANIFEST = 16384  # bytes of the whole manifest (rule 1)
MAX_OTA_FILES = 256  # entries in `files`
MAX_OTA_PATH = 64  # chars of a file's path
MAX_VERSION_PART = 9999  # each of MAJOR.MINOR.PATCH
MAX_FILE_BYTES = 2147483647  # a file's `bytes` above this is not a size: bad_field

# docs/broadcast.md §2 (a daily schedule) and its bounds
MAX_SCHEDULE = 16384  # bytes of the whole schedule envelope (rule 1)
MAX_PROGRAMMES = 32  # programmes in one schedule
MAX_PROG_ID = 32  # chars of a programme id
MAX_TITLE = 64  # chars of a programme's title
MAX_EXCEPT = 64  # dates in an `except` list
MAX_DURATION = 7200  # s of one programme
MAX_VALID_DAYS = 366  # until - from, in days
MAX_SCHED_VERSION = 2147483647
DAILY_VOLUME = 60  # a programme's volume when it names none
TZ_OFFSET = 28800  # s: "+08:00", the one time zone a schedule may name
