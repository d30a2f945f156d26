#!/usr/bin/env python3
"""Writes N seeded, reproducible rows of 7 columns as CSV (the benchmark rows).

Usage: Benchmarks/gen-rows.py ROWS [SEED] > rows.csv

Columns: id TEXT (primary key), name TEXT, country TEXT, year INTEGER,
tonnes INTEGER, grade REAL, note TEXT. The same seed always gives the same
bytes, so any engine can be fed the same rows.
"""
import random, sys

rows = int(sys.argv[1])
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 42)
countries = ["China", "United States", "Australia", "Burma", "Nigeria", "Thailand", "India", "Russia",
             "Vietnam", "Brazil", "Madagascar", "Malaysia", "Laos", "Greenland", "Canada", "Tanzania"]
words = ["deposit", "carbonatite", "ionic clay", "monazite", "bastnaesite", "tailings", "pilot", "expansion",
         "offtake", "separation", "magnet", "feed", "concentrate", "permit", "survey", "assay"]
out = sys.stdout
out.write("id,name,country,year,tonnes,grade,note\n")
buf = []
for i in range(rows):
    note = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
    if rng.random() < 0.1:
        note = '"' + note + ', revised"'
    buf.append(f"site-{i:08d},Site {i},{rng.choice(countries)},{rng.randint(1990, 2026)},"
               f"{rng.randint(0, 500000)},{rng.random() * 10:.6f},{note}\n")
    if len(buf) == 10000:
        out.write("".join(buf))
        buf = []
out.write("".join(buf))
