# The terminal's background chores: link state out (LED, emulator event, retained online), the
# clock from the 4G network, and heap and counters at each quiet moment.
import asyncio
import gc

import board
from micropython import const

IDLE_CHECK_MS = const(1000)


async def link_task(dev_id, mqtt, link, clock, log, lights):
    while True:
        await mqtt.up.wait()
        if not clock.synced and board.clock_synced():
            clock.set_synced()  # NTP answered once the link came up
            log("clock_synced")
        path = link.path
        board.event("link", path)
        lights.link(path)
        log("link_up", path=path)
        await mqtt.publish("eb/dev/%s/state" % dev_id, b"online", 1, True)
        await mqtt.down.wait()
        board.event("link", "none")
        lights.link("offline")
        log("link_down")


async def clock_task(modem, clock, log):
    # Time from the 4G network when NTP over IP never answered (alerts.md §4, clock).
    while modem is not None and not clock.synced:
        await modem.ready.wait()
        t = await modem.network_time()
        if t:
            clock.set_network(t)
            log("clock_synced", source="4g")
            return
        await asyncio.sleep_ms(60000)


async def idle_task(intake, arbiter, mqtt, link, modem, log):
    # After a burst of activity, at the first quiet moment: collect, and record heap use (the
    # memory benchmark and the leak test read these lines). Also notes analogue input changes.
    seen_activity = -1
    adc_last = None
    seen = intake.verifier.seen
    while True:
        await asyncio.sleep_ms(IDLE_CHECK_MS)
        try:
            if arbiter.current is None and intake.idle() and intake.activity != seen_activity:
                seen_activity = intake.activity
                gc.collect()
                log("mem", alloc=gc.mem_alloc(), free=gc.mem_free(), seen=len(seen),
                    envelopes=intake.activity)
                log("counts", receipts=intake.counts, dropped=intake.dropped,
                    queued_dropped=mqtt.dropped, link=link.path, switches=link.switches,
                    g4_in=modem.bytes_in if modem else 0, g4_out=modem.bytes_out if modem else 0)
                intake.clock.persist()
                seen.flush()
            elif seen.due() and intake.idle():
                seen.flush()  # a write that failed (no heap, flash error) is tried every second
            adc_now = (board.adc("line_ma"), board.adc("supply_mv"))
            if adc_now != adc_last:
                adc_last = adc_now
                log("analog", line_ma=adc_now[0], supply_mv=adc_now[1])
        except Exception as e:  # MemoryError on a fragmented heap: the next turn tries again
            try:
                log("upkeep_error", error=repr(e))
            except Exception:
                pass
