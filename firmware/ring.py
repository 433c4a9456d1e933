# A bounded FIFO that drops its oldest entry when full and counts what it dropped (alerts.md §6:
# receipts queued offline, "oldest dropped and counted"; STYLE.md "a bounded queue").


class Ring:
    """At most `size` items. put() on a full ring drops the oldest and counts it in `dropped`.
    The slot list grows to `size` as items come and is then reused: no allocation per item
    once it has reached its size, nothing allocated before the first item."""

    def __init__(self, size):
        self._buf = []
        self._size = size
        self._head = 0  # slot of the oldest item
        self._n = 0
        self.dropped = 0

    def __len__(self):
        return self._n

    def put(self, x):
        """Add x as the newest item. True when the oldest was dropped to make room."""
        buf = self._buf
        n = self._n
        if n >= self._size:
            buf[self._head] = x
            self._head = (self._head + 1) % n
            self.dropped += 1
            return True
        if n < len(buf):
            buf[(self._head + n) % len(buf)] = x
        elif self._head:  # grow behind the newest, which sits just before the oldest
            buf.insert(self._head, x)
            self._head += 1
        else:
            buf.append(x)
        self._n = n + 1
        return False

    def get(self):
        """Remove and return the oldest item (the ring must not be empty)."""
        buf = self._buf
        h = self._head
        x = buf[h]
        buf[h] = None  # the slot must not keep the item alive
        self._n -= 1
        self._head = 0 if self._n == 0 else (h + 1) % len(buf)
        return x
