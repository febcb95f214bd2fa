# SPDX-License-Identifier: MIT
"""This file tests posh objects held by other posh objects: a Queue, Lock,
Value, dict or list stored in a posh dict or list, or sent in a queued
message, stays alive after every handle of it is gone (the stored value
pins it), from any process, and is freed when the value or message is
removed (overwrite, del, pop, clear, get, discard), also when the holder
is itself held (nested dicts) and when the nesting is deep; a queue freed
with messages in it releases what they hold."""
import gc
import multiprocessing as mp
import os
import signal
import unittest

import posh
from helpers import JOIN, METHODS, join_all, run_py


def live():
    """(type, processes, pins) of every live object but the codec's table
    and the objects the test keeps."""
    gc.collect()
    return sorted((o["type"], o["processes"], o["pins"])
                  for o in posh.heap_objects() if o["type"] != "buffer")


def pins_of(obj):
    off, ident = obj._ref()[:2] if hasattr(obj, "_ref") else (None, None)
    for o in posh.heap_objects():
        if o["offset"] == off and o["id"] == ident:
            return o["pins"]
    return None


class TaggedQueue(posh.Queue):
    tag = "mine"


class Tagged2(TaggedQueue):
    pass


# --- children (module level: spawn imports them) ---------------------------
def _store_temporaries(d, lst):
    d["q"] = posh.Queue()
    d["inner"] = posh.dict(a=posh.list([1, 2]))
    lst.append(posh.Lock())
    lst.append(posh.Value("i", 41))


def _use_stored(d, lst, out):
    d["q"].put("from child")
    d["inner"]["a"].append(3)
    with lst[0]:
        lst[1].value += 1
    out.put("done")


def _put_temporary_queue(q):
    inner = posh.Queue()
    inner.put("inside")
    q.put(inner)  # the child exits holding nothing: the message pins it


def _reader(d, n, errors):
    bad = 0
    for _ in range(n):
        try:
            v = d["k"]["v"]
            if not isinstance(v, int):
                bad += 1
        except Exception:
            bad += 1
    errors.put(bad)


def _stored_then_killed(d, ready):
    d["kept"] = posh.list(["survives"])
    ready.put(1)
    os.kill(os.getpid(), signal.SIGKILL)


class StoredObjects(unittest.TestCase):
    def setUp(self):
        self.base = live()

    def assertNothingLeft(self):
        self.assertEqual(live(), self.base)

    def test_temporaries_live_while_stored(self):
        d = posh.dict()
        d["q"] = posh.Queue()
        d["lock"] = posh.Lock()
        d["v"] = posh.Value("d", 1.5)
        d["arr"] = posh.Array("i", [1, 2, 3])
        d["l"] = posh.list([posh.dict(x=1), posh.Event()])
        gc.collect()
        d["q"].put(1)
        self.assertEqual(d["q"].get(timeout=5), 1)
        with d["lock"]:
            pass
        self.assertEqual(d["v"].value, 1.5)
        self.assertEqual(d["arr"][:], [1, 2, 3])
        self.assertEqual(d["l"][0]["x"], 1)
        d["l"][1].set()
        self.assertTrue(d["l"][1].is_set())
        self.assertEqual(pins_of(d["q"]), 1)
        del d
        self.assertNothingLeft()

    def test_removal_frees(self):
        d, lst = posh.dict(), posh.list()
        d["a"] = posh.Queue()
        d["a"] = 1  # overwrite
        d["b"] = posh.Queue()
        del d["b"]
        d["c"] = posh.Queue()
        d.pop("c")
        d["e"] = posh.Queue()
        d.popitem()
        d.update(f=posh.Queue(), g=posh.Queue())
        d.clear()
        lst.append(posh.Queue())
        lst[0] = 2
        lst.extend([posh.Queue(), posh.Queue()])
        lst.pop()
        del lst[1]
        lst.append(posh.Queue())
        lst[:] = []
        gc.collect()
        self.assertEqual([o for o in live() if o[0] == "queue"],
                         [o for o in self.base if o[0] == "queue"])
        del d, lst
        self.assertNothingLeft()

    def test_subclass_objects_are_pinned(self):
        d = posh.dict(a=TaggedQueue(), b=Tagged2())
        gc.collect()
        self.assertEqual(type(d["a"]).__name__, "TaggedQueue")
        d["b"].put(1)
        self.assertEqual(d["b"].get(timeout=5), 1)
        with self.assertRaises(TypeError):
            class Bad(posh.Queue, flavour=1):
                pass
        del d
        self.assertNothingLeft()

    def test_read_value_keeps_object_after_removal(self):
        d = posh.dict()
        d["q"] = posh.Queue()
        q = d["q"]
        del d["q"]  # the pin goes; q's handle holds it
        q.put("still here")
        self.assertEqual(q.get(timeout=5), "still here")
        del q, d
        self.assertNothingLeft()

    def test_nested_dicts_free_their_contents(self):
        outer = posh.dict()
        outer["mid"] = posh.dict(inner=posh.dict(q=posh.Queue()))
        outer["mid"]["inner"]["q"].put(5)
        self.assertEqual(outer["mid"]["inner"]["q"].get(timeout=5), 5)
        # a temporary wrapper of a stored dict going away releases nothing
        self.assertEqual(len(outer["mid"]["inner"]), 1)
        del outer["mid"]
        del outer
        self.assertNothingLeft()

    def test_deep_nesting_no_recursion(self):
        top = posh.dict()
        cur = top
        for _ in range(3000):
            nxt = posh.dict()
            cur["next"] = nxt
            cur = nxt
        cur["end"] = posh.Queue()
        del cur, nxt
        gc.collect()
        self.assertEqual(sum(1 for o in live() if o[0] == "dict"),
                         3001 + sum(1 for o in self.base if o[0] == "dict"))
        del top  # 3000 levels released iteratively
        self.assertNothingLeft()

    def test_list_in_itself(self):
        b = posh.list()
        b.append(b)  # a cycle through pins: kept until the heap goes
        self.assertEqual(len(b[0]), 1)
        b.clear()  # breaking the cycle frees it
        del b
        self.assertNothingLeft()

    def test_same_object_stored_twice(self):
        q = posh.Queue()
        d = posh.dict(a=q, b=q, c=[q, q])
        self.assertEqual(pins_of(q), 4)
        del d["a"]
        self.assertEqual(pins_of(q), 3)
        d.clear()
        self.assertEqual(pins_of(q), 0)
        del q, d
        self.assertNothingLeft()

    def test_dumps_discard_and_loads(self):
        data = posh.dumps([posh.Queue(), posh.Lock()])
        gc.collect()
        self.assertEqual(sorted(o[0] for o in live() if o[2]),
                         ["queue", "sync"])
        posh._posh.discard(data)  # what a queue does with an undelivered one
        self.assertNothingLeft()
        data = posh.dumps({"q": posh.Queue()})
        q = posh.loads(data)["q"]  # consumes the message's pin
        q.put(1)
        self.assertEqual(q.get(timeout=5), 1)
        del q
        self.assertNothingLeft()

    def test_queue_freed_with_messages_releases_them(self):
        q = posh.Queue()
        q.put(posh.Lock())
        q.put(posh.dict(inner=posh.Queue()))
        q.put(bytearray(1 << 20))  # an out-of-band heap block
        used = posh.heap_info()["bytes_in_use"]
        q2 = posh.SimpleQueue()
        q2.put(posh.list([1]))
        d = posh.dict(q=q2)  # a stored queue, with a message, in a dict
        del q2
        gc.collect()
        self.assertNotEqual(live(), self.base)
        del q, d
        self.assertNothingLeft()
        self.assertLess(posh.heap_info()["bytes_in_use"], used - (1 << 20))

    def test_pinned_objects_from_children(self):
        for m in METHODS:
            with self.subTest(method=m):
                ctx = mp.get_context(m)
                d, lst, out = posh.dict(), posh.list(), posh.Queue()
                p = ctx.Process(target=_store_temporaries, args=(d, lst))
                p.start()
                join_all(self, [p])
                self.assertEqual(p.exitcode, 0)
                p = ctx.Process(target=_use_stored, args=(d, lst, out))
                p.start()
                self.assertEqual(out.get(timeout=JOIN), "done")
                join_all(self, [p])
                self.assertEqual(d["q"].get(timeout=5), "from child")
                self.assertEqual(d["inner"]["a"][:], [1, 2, 3])
                self.assertEqual(lst[1].value, 42)
                del d, lst, out, p
                posh.heap_reap()
                self.assertNothingLeft()

    def test_message_outlives_its_sender(self):
        for m in METHODS:
            with self.subTest(method=m):
                q = posh.Queue()
                p = mp.get_context(m).Process(target=_put_temporary_queue,
                                              args=(q,))
                p.start()
                join_all(self, [p])
                inner = q.get(timeout=JOIN)
                self.assertEqual(inner.get(timeout=5), "inside")
                del inner, q, p
                posh.heap_reap()
                self.assertNothingLeft()

    def test_overwrite_races_readers(self):
        d, errors = posh.dict(), posh.Queue()
        d["k"] = posh.dict(v=0)
        p = mp.get_context("fork").Process(target=_reader,
                                           args=(d, 3000, errors))
        p.start()
        for i in range(3000):
            d["k"] = posh.dict(v=i)
        self.assertEqual(errors.get(timeout=JOIN), 0)
        join_all(self, [p])
        del d, errors, p
        posh.heap_reap()
        self.assertNothingLeft()

    def test_killed_writer_leaves_value(self):
        d, ready = posh.dict(), posh.Queue()
        p = mp.get_context("fork").Process(target=_stored_then_killed,
                                           args=(d, ready))
        p.start()
        ready.get(timeout=JOIN)
        p.join(JOIN)
        self.assertEqual(p.exitcode, -signal.SIGKILL)
        posh.heap_reap()
        self.assertEqual(d["kept"][:], ["survives"])
        posh._posh.heap_check()
        del d, ready, p
        self.assertNothingLeft()

    def test_unrelated_process_reads_nested(self):
        rc, out, err = run_py("""
            import posh
            from multiprocessing import get_context
            def child(d):
                d["l"].append(d["q"].get(timeout=30))
            if __name__ == "__main__":
                d = posh.dict(l=posh.list(), q=posh.Queue())
                d["q"].put("hello")
                p = get_context("spawn").Process(target=child, args=(d,))
                p.start(); p.join(60)
                print(d["l"][:], p.exitcode)
            """)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), "['hello'] 0")

    def test_manager_nested(self):
        with posh.Manager() as m:
            d = m.dict()
            d["pets"] = m.dict(ferrets=2)
            d["q"] = m.Queue()
            d["l"] = m.list(range(3))
            d["pets"]["hamsters"] = 4
            self.assertEqual(dict(d["pets"]), {"ferrets": 2, "hamsters": 4})
            d["q"].put(1)
            self.assertEqual(d["q"].get(timeout=5), 1)
            d["l"].append(3)
            self.assertEqual(d["l"][:], [0, 1, 2, 3])
            del d
        self.assertNothingLeft()


if __name__ == "__main__":
    unittest.main()
