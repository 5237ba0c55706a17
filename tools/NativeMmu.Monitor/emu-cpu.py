#!/usr/bin/env python3
"""emu-cpu.py PID: polls /proc/PID/task every 5 ms until PID exits and prints, for each thread named
emu-0 (the multi-fault worker; the warm-up run has its own), its TID and the nanoseconds it spent on
a CPU (schedstat), last value seen. Used by overhead.sh to turn faults per minute into faults per
CPU-second of the worker, which other work on the machine does not move."""
import os, sys, time

pid = sys.argv[1]
seen = {}
while os.path.exists(f"/proc/{pid}/task"):
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        break
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != "emu-0":
                    continue
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                seen[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    time.sleep(0.005)
for tid in sorted(seen):
    print(tid, seen[tid])
