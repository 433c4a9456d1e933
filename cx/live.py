"""`cx broadcast live`: a live announcement from a file or a microphone (docs/broadcast.md §7),
signed with a key of use daily, streamed in real time to the terminals of the regions."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

from cx import alert
from cx.common import CliError, ExitCode, number
from cx.keys import signing_key
from tools import live, schedule
from tools.alertsend import LOGIN_HINT
from tools.mqttsession import BrokerUnavailable, NotAuthorized, Session


def _blocks(args: argparse.Namespace) -> tuple[Iterator[bytes], bool]:
    """The PCM blocks and whether to pace them (a file: yes; stdin arrives in real time)."""
    if args.input == "-":
        return live.pcm_blocks(sys.stdin.buffer), False
    try:
        blocks = live.wav_blocks(args.input)
        first = next(blocks, None)
    except (OSError, EOFError) as e:
        raise CliError(f"--input {args.input}: {getattr(e, 'strerror', None) or e}",
                       ExitCode.USAGE) from None
    except ValueError as e:  # wave.Error is one
        raise CliError(str(e), ExitCode.USAGE) from None
    if first is None:
        raise CliError(f"--input {args.input} holds no sound", ExitCode.USAGE)

    def all_() -> Iterator[bytes]:
        yield first
        yield from blocks
    return all_(), True


def cmd_live(args: argparse.Namespace) -> int:
    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    if not regions:
        raise CliError("give --regions CODE12[,CODE12...]", ExitCode.USAGE)
    key = signing_key(args.key, args.crt)
    now = int(time.time())
    for r in regions:
        try:
            schedule.check_signer(key, r, now)
        except schedule.OutOfScope as e:
            raise CliError(str(e), ExitCode.USAGE) from None
        except (schedule.SignerError, ValueError) as e:
            raise CliError(str(e)) from None
    dest = alert.destination(args)
    if dest is None:
        raise CliError("give --broker HOST:PORT", ExitCode.USAGE)
    blocks, pace = _blocks(args)
    s = live.Stream(key, regions, args.id, args.volume)
    print(f"live {s.id}: {', '.join(s.topics)}; kid {key.kid}"
          + ("" if pace else "; reading 16 kHz mono s16le PCM from stdin"), file=sys.stderr)
    try:
        with Session(dest[0], dest[1], dest[2], name="cx-live", timeout=args.timeout,
                     login_hint=LOGIN_HINT) as sess:
            def pub(payload: bytes | str, qos: int) -> Any:
                if qos:
                    refused = sess.publish(s.topics, payload)
                    if refused:
                        raise CliError(f"broker refused the stream on {refused[0][0]}: "
                                       f"{refused[0][1]}", ExitCode.NOT_AUTHORIZED)
                else:
                    sess.fire(s.topics, payload)
            n = live.send(s.messages(blocks), pub, pace=pace)
    except NotAuthorized as e:
        raise CliError(str(e), ExitCode.NOT_AUTHORIZED) from None
    except BrokerUnavailable as e:
        raise CliError(str(e), ExitCode.UNREACHABLE) from None
    except KeyboardInterrupt:
        print(f"live {s.id}: stopped (terminals end it after their stall time)", file=sys.stderr)
        return ExitCode.INTERRUPTED
    print(f"live {s.id}: {n} messages sent")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("live", help="stream a live announcement (a WAV file, or PCM on stdin)")
    p.add_argument("--regions", required=True, metavar="CODE12[,CODE12...]",
                   help="the regions that hear it")
    p.add_argument("--input", required=True, metavar="FILE.wav|-",
                   help="16 kHz mono 16-bit WAV, sent in real time; - for raw PCM on stdin")
    p.add_argument("--key", required=True, metavar="KEYFILE", help="a key with use daily")
    p.add_argument("--crt", metavar="FILE", help="the key's certificate, instead of its own")
    p.add_argument("--id", metavar="ID", help="the stream's id (default: live-<time>-<random>)")
    p.add_argument("--volume", type=number(int, 0, 100), help="0..100 (default 80)")
    p.add_argument("--broker", metavar="HOST:PORT", help="the broker the terminals listen on")
    p.add_argument("--timeout", type=alert.TIMEOUT, default=alert.DEFAULT_TIMEOUT,
                   metavar="SECONDS", help="seconds to wait for the broker")
    alert.add_broker_login(p)
    p.set_defaults(func=cmd_live)
