#!/usr/bin/env python3
"""Choose the JPEG 2000 decoder for issue 11 by measurement. Run by hand, never by CI.

    bash bench/jp2_setup.sh                                  # once: packages, venv, test files
    /tmp/jp2bench/venv/bin/python bench/jp2_decoders.py      # ~4 min on 2 cores; ONE markdown table
    ... --n 60 --no-iipsrv                                   # shorter; without the iipsrv anchor

Every measurement runs in a child process of its own (so its peak RSS, from getrusage, is its own)
with 2-thread pools at most. Output tiles are 256 px at a resolution level r (r=0 full size,
r=2 a quarter); a timing loop draws N tiles (default 100) of a level, shuffled with a fixed seed.

  fresh   open the file anew for every tile (a cold request that finds no open handle)
  handle  one open handle per file, reused (the decoder still decodes the codeblocks each time)
  2 thr   two Python threads, N tiles from levels 0, 1, 2 mixed; tiles/s (whole machine)

Strategies:
  region  decode exactly the output tile's area at level r (glymur: jp2[y0:y1:2**r, x0:x1:2**r],
          i.e. opj_set_decode_area + reduce; pyvips: jp2kload page=r + crop)
  ctile   decode one whole 1024-px codestream tile at level r once (glymur _read(tile=, rlevel=))
          and cut every 256-px output tile it holds (16 at r=0, 4 at r=1, 1 at r=2); the cost of
          one output tile is the codestream tile's decode over the output tiles it yields
  whole   imagecodecs: jpeg2k_decode has no region and no reduce argument, so every request
          decodes the whole image (htj2k_decode has skipres= but no region either)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "bench"
JP2BENCH = Path(os.environ.get("JP2BENCH", "/tmp/jp2bench"))
IMG = JP2BENCH / "images"
T = 256
CT = 1024  # codestream tile size of the test files


# ---------------------------------------------------------------- child side

def grid(W, H, r):
    w, h = -(-W // (1 << r)), -(-H // (1 << r))
    return [(c, rr) for rr in range(-(-h // T)) for c in range(-(-w // T))]


def full_area(W, H, r, c, rr):
    s = 1 << r
    x0, y0 = c * T * s, rr * T * s
    return x0, y0, min(W, x0 + T * s), min(H, y0 + T * s)


def sample(W, H, levels, n, seed=1):
    pool = [(r, c, rr) for r in levels for (c, rr) in grid(W, H, r)]
    random.Random(seed).shuffle(pool)
    return pool[:n]


class Glymur:
    def __init__(self, path, threads=1):
        import glymur
        glymur.set_option("lib.num_threads", threads)
        self.g, self.path = glymur, path
        self.j = glymur.Jp2k(path)
        self.H, self.W = self.j.shape[:2]

    def region(self, r, c, rr, fresh=False):
        j = self.g.Jp2k(self.path) if fresh else self.j
        x0, y0, x1, y1 = full_area(self.W, self.H, r, c, rr)
        s = 1 << r
        return j[y0:y1:s, x0:x1:s] if s > 1 else j[y0:y1, x0:x1]

    def ctile(self, r, tc, tr, fresh=False):
        """Decode codestream tile (tc, tr) at level r; return the output tiles cut from it."""
        j = self.g.Jp2k(self.path) if fresh else self.j
        ntx = -(-self.W // CT)
        a = j._read(tile=tr * ntx + tc, rlevel=r)
        step = T
        out = []
        for y in range(0, a.shape[0], step):
            for x in range(0, a.shape[1], step):
                out.append(a[y:y + step, x:x + step].copy())
        return out


class Vips:
    def __init__(self, path, threads=1):
        os.environ["VIPS_CONCURRENCY"] = str(threads)
        import pyvips
        pyvips.cache_set_max(0)  # no operation cache: every crop is decoded (or hits jp2kload's own cache)
        self.v, self.path = pyvips, path
        self.imgs = {}
        im = self.open(0)
        self.W, self.H = im.width, im.height

    def open(self, r):
        return self.v.Image.new_from_file(self.path, page=r, access="random")

    def region(self, r, c, rr, fresh=False):
        im = self.open(r) if fresh else self.imgs.get(r) or self.imgs.setdefault(r, self.open(r))
        x, y = c * T, rr * T
        w, h = min(T, im.width - x), min(T, im.height - y)
        import numpy as np
        fmt = {"uchar": np.uint8, "ushort": np.uint16}[im.format]
        a = np.frombuffer(im.crop(x, y, w, h).write_to_memory(), dtype=fmt)
        return a.reshape(h, w, im.bands)


def timed(fn, items):
    t0 = time.perf_counter()
    for it in items:
        fn(*it)
    return time.perf_counter() - t0


def quiet():
    import warnings
    warnings.simplefilter("ignore")


def child(spec):
    quiet()
    kind, path, strat = spec["kind"], spec["path"], spec["strategy"]
    n, threads = spec["n"], spec.get("lib_threads", 1)
    res = {}
    if kind == "imagecodecs":
        import imagecodecs
        fn = imagecodecs.htj2k_decode if path.endswith(".j2c") else imagecodecs.jpeg2k_decode
        kw = {} if path.endswith(".j2c") else {"numthreads": threads}
        for r, key in ((0, "r0"), (2, "r2")):
            if r and not path.endswith(".j2c"):
                continue  # jpeg2k_decode cannot reduce: a 1/4 tile costs the full decode too
            ts = []
            for _ in range(2):
                t0 = time.perf_counter()
                data = Path(path).read_bytes()
                a = fn(data, skipres=r, **kw) if r else fn(data, **kw)
                ts.append(time.perf_counter() - t0)
            res[key + "_fresh"] = min(ts) * 1e3
            res["shape" + key] = list(a.shape)
        if "r2_fresh" not in res:
            res["r2_fresh"] = res["r0_fresh"]
            res["note"] = "no reduce: 1/4 costs a full decode"
        res["thr2"] = 2 / (res["r0_fresh"] / 1e3)
    else:
        d = (Glymur if kind == "glymur" else Vips)(path, threads)
        W, H = d.W, d.H
        if strat == "region":
            for r in (0, 2):
                items = sample(W, H, [r], n)
                d.region(*items[0])  # warm the page cache and the handle
                res[f"r{r}_fresh"] = timed(lambda *a: d.region(*a, fresh=True), items) / len(items) * 1e3
                res[f"r{r}_handle"] = timed(d.region, items) / len(items) * 1e3
            items = sample(W, H, [0, 1, 2], n, seed=2)
            if spec.get("pool", 2) > 1:
                with ThreadPoolExecutor(2) as ex:
                    t0 = time.perf_counter()
                    list(ex.map(lambda it: d.region(*it), items))
                    res["thr2"] = len(items) / (time.perf_counter() - t0)
        else:  # ctile
            ntx, nty = -(-W // CT), -(-H // CT)
            for r in (0, 2):
                cts = [(r, tc, tr) for tr in range(nty) for tc in range(ntx)]
                random.Random(1).shuffle(cts)
                per = max(1, (CT >> r) // T) ** 2
                cts = cts[:max(2, n // per)]
                for mode in ("fresh", "handle"):
                    t0 = time.perf_counter()
                    got = sum(len(d.ctile(*it, fresh=(mode == "fresh"))) for it in cts)
                    res[f"r{r}_{mode}"] = (time.perf_counter() - t0) / got * 1e3
            cts = [(r, tc, tr) for r in (0, 1, 2) for tr in range(nty) for tc in range(ntx)]
            random.Random(2).shuffle(cts)
            # about n output tiles, drawn like the region loop: level weights follow tile counts
            with ThreadPoolExecutor(2) as ex:
                todo, got = [], 0
                for it in cts:
                    if got >= n:
                        break
                    todo.append(it)
                    got += max(1, (CT >> it[0]) // T) ** 2
                t0 = time.perf_counter()
                got = sum(len(x) for x in ex.map(lambda it: d.ctile(*it), todo))
                res["thr2"] = got / (time.perf_counter() - t0)
        a = d.region(0, 1, 1)
        res["dtype"] = str(a.dtype)
    res["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def checks(spec):
    """Bit-exactness, 16-bit, HTJ2K and quality layers: small decodes, one child."""
    import numpy as np
    quiet()
    out = {}
    rgb = str(IMG / "rgb8.jp2")
    g, v = Glymur(rgb), Vips(rgb)
    tiles = [(0, 3, 2), (0, 39, 29), (2, 4, 3), (2, 9, 7), (1, 19, 14)]
    diffs = []
    for t in tiles:
        a, b = g.region(*t).astype(int), v.region(*t).astype(int)
        diffs.append(int(np.abs(a - b).max()) if a.shape == b.shape else f"shape {a.shape} vs {b.shape}")
    out["glymur_vs_vips_rgb8"] = diffs
    # ctile cut vs region: the same pixels?
    r, c, rr = 0, 5, 6  # output tile (5, 6) at r=0 lies in codestream tile (1, 1)
    cut = g.ctile(0, 1, 1)[(rr % 4) * 4 + (c % 4)]
    out["ctile_vs_region_r0"] = int(np.abs(cut.astype(int) - g.region(r, c, rr).astype(int)).max())
    cut2 = g.ctile(2, 3, 2)[0]
    out["ctile_vs_region_r2"] = int(np.abs(cut2.astype(int) - g.region(2, 3, 2).astype(int)).max())
    try:
        import imagecodecs
        whole = imagecodecs.jpeg2k_decode(Path(rgb).read_bytes(), numthreads=2)
        ds = []
        for t in tiles[:2]:
            x0, y0, x1, y1 = full_area(g.W, g.H, *t)
            ds.append(int(np.abs(whole[y0:y1, x0:x1].astype(int) - g.region(*t).astype(int)).max()))
        out["imagecodecs_vs_glymur_rgb8"] = ds
        del whole
    except Exception as e:
        out["imagecodecs_vs_glymur_rgb8"] = f"failed: {e}"
    g16, v16 = Glymur(str(IMG / "grey16.jp2")), Vips(str(IMG / "grey16.jp2"))
    a, b = g16.region(0, 3, 2), v16.region(0, 3, 2)
    out["grey16"] = {"glymur_dtype": str(a.dtype), "vips_dtype": str(b.dtype),
                     "max_diff": int(np.abs(a.astype(int) - b.reshape(a.shape).astype(int)).max()),
                     "max_value": int(a.max())}
    ht = IMG / "rgb8-ht.j2c"
    if ht.exists():
        res = {}
        try:
            gh = Glymur(str(ht))
            a = gh.region(0, 3, 2)
            res["glymur"] = "decodes"
            import imagecodecs
            whole = imagecodecs.htj2k_decode(ht.read_bytes())
            x0, y0, x1, y1 = full_area(gh.W, gh.H, 0, 3, 2)
            res["glymur_vs_openjph_r0"] = int(np.abs(whole[y0:y1, x0:x1].astype(int) - a.astype(int)).max())
            w254 = imagecodecs.jpeg2k_decode(ht.read_bytes(), numthreads=2)  # imagecodecs' OpenJPEG 2.5.4
            res["imagecodecs_openjpeg_vs_openjph_r0"] = int(np.abs(w254[y0:y1, x0:x1].astype(int)
                                                              - whole[y0:y1, x0:x1].astype(int)).max())
            res["glymur_r0_tile_mean_vs_openjph"] = [round(float(a.mean()), 1),
                                                     round(float(whole[y0:y1, x0:x1].mean()), 1)]
            del whole, w254
            w2 = imagecodecs.htj2k_decode(ht.read_bytes(), skipres=2)
            a2 = gh.region(2, 3, 2)
            res["glymur_vs_openjph_r2"] = int(np.abs(w2[2 * T:3 * T, 3 * T:4 * T].astype(int) - a2.astype(int)).max())
        except Exception as e:
            res["error"] = str(e)[:120]
        try:
            vh = Vips(str(ht))
            diff = vh.region(0, 3, 2).astype(int) - gh.region(0, 3, 2).astype(int)
            res["vips_vs_glymur_r0"] = int(np.abs(diff).max())
        except Exception as e:
            res["vips"] = "fails: " + str(e).splitlines()[0][:80]
        out["htj2k"] = res
    lay = Glymur(str(IMG / "layers.jp2"))
    full = lay.region(0, 2, 2).astype(float)
    for _ in range(3):
        lay.region(0, 2, 2)  # warm up before timing
    ls = {}
    for L in (1, 2, 0):  # OpenJPEG's cp_layer: decode the first L layers, 0 = all
        lay.j.layer = L
        t0 = time.perf_counter()
        for _ in range(10):
            a = lay.region(0, 2, 2)
        ms = (time.perf_counter() - t0) / 10 * 1e3
        mse = float(((a.astype(float) - full) ** 2).mean())
        psnr = "inf" if mse == 0 else round(10 * np.log10(255 ** 2 / mse), 1)
        ls[L or "all 3"] = f"{ms:.1f} ms, PSNR vs all {psnr} dB"
    out["layers"] = ls
    print(json.dumps(out))


# ---------------------------------------------------------------- parent side

def run_child(spec, timeout=600):
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                       capture_output=True, text=True, timeout=timeout)
    line = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if p.returncode or not line:
        return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1][:160]}
    return json.loads(line[-1])


def iipsrv_anchor(port=18195, n=300):
    binp = ROOT / ".cache/iipsrv-1.3/iipsrv-1.3/src/iipsrv.fcgi"
    if not binp.exists() or not shutil.which("wrk"):
        return None, "iipsrv 1.3 or wrk missing"
    urls = JP2BENCH / "urls"
    urls.mkdir(exist_ok=True)
    res = {}
    env = dict(os.environ, IIPSRV_BIN=str(binp), TILEBENCH_DIR=str(JP2BENCH),
               FILESYSTEM_PREFIX=str(IMG) + "/")
    for lvl, name in ((6, "r0"), (4, "r2")):
        p = subprocess.run([sys.executable, str(SHARED / "make-urls.py"), "--size", "10000x7500", "--nres", "7",
                            "--levels", str(lvl), "--name", "rgb8.jp2"], capture_output=True, text=True, check=True)
        f = urls / f"iip-l{lvl}.txt"
        f.write_text("\n".join(p.stdout.splitlines()[:n]) + "\n")
        subprocess.run(["bash", str(SHARED / "run-iipsrv.sh"), str(port), "2"], env=env, check=True,
                       capture_output=True)
        try:
            p = subprocess.run(["bash", str(SHARED / "bench-tiles.sh"), "--base", f"http://127.0.0.1:{port}",
                                "--mode", "both", "-d", "5", "--label", f"iip-jp2-l{lvl}",
                                "--out", str(JP2BENCH / "iipsrv-results.txt"), str(f)],
                               env=env, capture_output=True, text=True, timeout=180)
            for line in p.stdout.splitlines():
                if line.startswith("RESULT"):
                    kv = dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)
                    res[(name, kv.get("mode"))] = (float(kv.get("rps", 0)),
                                                  sum(int(kv.get(k, 0)) for k in kv if k.startswith("err_")))
        finally:
            subprocess.run(["bash", str(SHARED / "stop-iipsrv.sh"), str(port)], env=env, capture_output=True)
    return res, binp


def machine():
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    mem = next((int(ln.split()[1]) // 1024 for ln in meminfo if ln.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} cores, {cpu}, {mem} MB RAM, {platform.system()} {platform.release()}"


def versions():
    out = []
    try:
        import glymur
        out.append(f"glymur {glymur.__version__} / OpenJPEG {glymur.version.openjpeg_version}")
    except Exception:
        pass
    try:
        import imagecodecs
        v = imagecodecs.version()
        ojp = re.search(r"openjpeg-([\d.]+)", v)
        oph = re.search(r"openjph-([\d.]+)", v)
        out.append(f"imagecodecs {imagecodecs.__version__} "
                   f"(OpenJPEG {ojp and ojp.group(1)}, OpenJPH {oph and oph.group(1)})")
    except Exception:
        pass
    try:
        import pyvips
        lv = f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
        out.append(f"pyvips {pyvips.__version__} ABI mode over Debian libvips {lv}")
    except Exception:
        pass
    return "; ".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="tiles per timing loop (default 100)")
    ap.add_argument("--no-iipsrv", action="store_true")
    ap.add_argument("--child")
    ap.add_argument("--checks", action="store_true")
    a = ap.parse_args()
    if a.child:
        spec = json.loads(a.child)
        return checks(spec) if spec.get("checks") else child(spec)
    for f in ("rgb8.jp2", "grey16.jp2", "layers.jp2"):
        if not (IMG / f).exists():
            sys.exit(f"{IMG / f} missing: run bash bench/jp2_setup.sh first")
    rgb, g16, ht = str(IMG / "rgb8.jp2"), str(IMG / "grey16.jp2"), str(IMG / "rgb8-ht.j2c")
    n = a.n
    rows = [
        ("glymur", rgb, "region", 1, "glymur, region + reduce"),
        ("glymur", rgb, "ctile", 1, "glymur, codestream tile once, cut 256s"),
        ("glymur", rgb, "region", 2, "glymur, region, lib.num_threads=2"),
        ("vips", rgb, "region", 1, "pyvips/Debian libvips jp2kload, page=r + crop"),
        ("imagecodecs", rgb, "whole", 1, "imagecodecs jpeg2k_decode (whole image)"),
        ("imagecodecs", rgb, "whole", 2, "imagecodecs jpeg2k_decode, numthreads=2"),
        ("glymur", g16, "region", 1, "glymur, region + reduce"),
        ("glymur", g16, "ctile", 1, "glymur, codestream tile once, cut 256s"),
        ("vips", g16, "region", 1, "pyvips/Debian libvips jp2kload, page=r + crop"),
    ]
    if os.path.exists(ht):
        rows += [("glymur", ht, "region", 1, "glymur (OpenJPEG 2.5.0 HT), region + reduce"),
                 ("glymur", ht, "ctile", 1, "glymur (OpenJPEG HT), codestream tile once"),
                 ("imagecodecs", ht, "whole", 1, "imagecodecs htj2k_decode (OpenJPH), skipres=r")]
    t0 = time.time()
    load0 = os.getloadavg()[0]
    results = []
    kind_of = {label: kind for kind, _, _, _, label in rows}
    for kind, path, strat, thr, label in rows:
        spec = {"kind": kind, "path": path, "strategy": strat, "n": n, "lib_threads": thr,
                "pool": 1 if (kind == "glymur" and thr > 1) else 2}
        print(f"... {label} on {Path(path).name}", file=sys.stderr, flush=True)
        results.append((label, Path(path).name, run_child(spec)))
    print("... checks", file=sys.stderr, flush=True)
    chk = run_child({"checks": True})
    anchor, binp = (None, "skipped (--no-iipsrv)") if a.no_iipsrv else iipsrv_anchor()

    def f(x, d=1):
        return "-" if x is None else f"{x:.{d}f}"

    print(f"JPEG 2000 decoders, {time.strftime('%Y-%m-%d %H:%M')}, {machine()}, load {load0:.2f} -> "
          f"{os.getloadavg()[0]:.2f}; {versions()}; N={n} tiles/loop; run took {time.time() - t0:.0f} s; "
          f"`{sys.executable} bench/jp2_decoders.py --n {n}{' --no-iipsrv' if a.no_iipsrv else ''}`\n")
    print("| decoder, strategy | file | ms/tile r0 fresh | ms/tile r0 handle | ms/tile r2 fresh | ms/tile r2 handle "
          "| tiles/s, 2 threads, r0-2 | peak RSS MB | notes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, fname, r in results:
        if "error" in r:
            print(f"| {label} | {fname} | - | - | - | - | - | - | failed: {r['error']} |")
            continue
        thr = "-" if "lib_threads=2" in label else f(r.get("thr2"), 0)
        note = r.get("note", "") or (r.get("dtype", "") and f"{r['dtype']}")
        if "lib.num_threads" in label:
            note += "; 1 request at a time, 2 decoder threads"
        htc = chk.get("htj2k", {}) if "error" not in chk else {}
        if fname.endswith(".j2c") and kind_of[label] == "glymur" and htc.get("glymur_vs_openjph_r0", 0) > 2:
            note += "; **pixels wrong** (see the HTJ2K check): timing of a broken decode"
        print(f"| {label} | {fname} | {f(r.get('r0_fresh'))} | {f(r.get('r0_handle'))} | {f(r.get('r2_fresh'))} "
              f"| {f(r.get('r2_handle'))} | {thr} | {f(r.get('rss_mb'), 0)} | {note} |")
    if anchor:
        for lvl in ("r0", "r2"):
            c, w = anchor.get((lvl, "cold")), anchor.get((lvl, "warm"))
            errs = sum(x[1] for x in (c, w) if x)
            print(f"| iipsrv 1.3 (OpenJPEG {'2.5.0'}), JTL, 2 procs, wrk -c16 | rgb8.jp2 | - | - | - | - "
                  f"| cold {f(c and c[0], 0)}, warm {f(w and w[0], 0)} | - | IIP level {6 if lvl == 'r0' else 4} "
                  f"({lvl}), 300 URLs, HTTP + JPEG encode included; errors {errs}; goal: cold 2x, warm 10x |")
    elif binp:
        print(f"| iipsrv 1.3 | rgb8.jp2 | - | - | - | - | - | - | {binp} |")
    if "error" in chk:
        print(f"| checks | - | - | - | - | - | - | - | failed: {chk['error']} |")
    else:
        def cell(k):
            return json.dumps(chk.get(k)).replace("|", "/").replace('"', "")
        print(f"| check: bit-exactness | rgb8.jp2 | - | - | - | - | - | - | max abs diff glymur vs libvips on 5 tiles "
              f"{cell('glymur_vs_vips_rgb8')}; imagecodecs (OpenJPEG 2.5.4) vs glymur (2.5.0) r0 "
              f"{cell('imagecodecs_vs_glymur_rgb8')}; ctile cut vs region r0 {cell('ctile_vs_region_r0')}, "
              f"r2 {cell('ctile_vs_region_r2')} |")
        print(f"| check: 16-bit | grey16.jp2 | - | - | - | - | - | - | {cell('grey16')} |")
        print(f"| check: HTJ2K | rgb8-ht.j2c | - | - | - | - | - | - | {cell('htj2k')} |")
        print(f"| check: quality layers (glymur layer=) | layers.jp2 | - | - | - | - | - | - | "
              f"r0 tile, layers decoded -> {cell('layers')} |")


if __name__ == "__main__":
    main()
