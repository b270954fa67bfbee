#!/usr/bin/env bash
# Groundwork for issue 11 (JPEG 2000 sources): install the decoder candidates measured by
# bench/jp2_decoders.py and make its test files. Idempotent: every step is skipped when its
# result is already there. Run by hand, never by CI; nothing here touches pyproject.toml or the
# project's .venv (only its pyvips is used, read-only, to draw the source image).
#
#   bash bench/jp2_setup.sh            # ~3-4 minutes on 2 cores the first time, then ~1 s
#
# Installs
#   apt (as root):  libopenjp2-7 (glymur's decoder), libopenjp2-tools (opj_compress),
#                   libvips42 + libvips-tools (Debian's libvips, built with jp2kload via OpenJPEG)
#                   openjph-tools (ojph_compress: writes the HTJ2K variant), grokj2k-tools (Grok 10
#                   CLI, grk_decompress: a region-decode cross-check by command line only)
#   pip, into a separate venv $JP2BENCH/venv (default /tmp/jp2bench/venv):
#                   numpy, packaging (glymur imports it without declaring it), glymur (ctypes over the system libopenjp2), imagecodecs (its own
#                   OpenJPEG in the wheel), pyvips (no pyvips-binary: ABI mode over Debian's libvips)
# Makes, in $JP2BENCH/images (default /tmp/jp2bench/images):
#   rgb8.jp2     10000x7500 RGB 8-bit, exactly the issue's options:
#                opj_compress -n 7 -b 64,64 -c [256,256],[256,256],[128,128] -p RPCL -r 20 -t 1024,1024 -SOP
#   grey16.jp2   10000x7500 grey 16-bit, the same options
#   layers.jp2   2000x1500 RGB 8-bit, the same options but 3 quality layers (-r 80,40,20)
#   rgb8-ht.j2c  HTJ2K variant (raw codestream), written by ojph_compress (OpenJPH 0.9) with the same
#                geometry (6 decompositions = 7 resolutions, 64x64 blocks, the same precincts, RPCL,
#                1024-px tiles) but irreversible 9/7 + a quantisation step instead of -r 20 (HT has
#                no rate control in these encoders) and no SOP markers (ojph has no option for them).
#                Debian 12's opj_compress 2.5.0 cannot write HT: its -M lists only the Part-1 switches.
# Source pixels: drawn with the project's pyvips (multi-scale Gaussian noise + gradients), written
# as binary PPM/PGM, which opj_compress reads.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
JP2BENCH=${JP2BENCH:-/tmp/jp2bench}
case "$JP2BENCH" in /tmp/*) ;; *) echo "JP2BENCH must be under /tmp" >&2; exit 2;; esac
IMG=$JP2BENCH/images
VENV=$JP2BENCH/venv
mkdir -p "$IMG" "$JP2BENCH/src"
OPJ_OPTS=(-n 7 -b 64,64 -c '[256,256],[256,256],[128,128]' -p RPCL -r 20 -t 1024,1024 -SOP)

# ---- apt ----
need=()
for p in libopenjp2-7 libopenjp2-tools libvips42 libvips-tools openjph-tools grokj2k-tools; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "run as root to apt-get install ${need[*]}" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# ---- separate venv for the candidates ----
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import glymur, imagecodecs, numpy, pyvips, packaging' 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check numpy packaging glymur imagecodecs pyvips
fi
# pyvips must run over Debian's libvips (which has jp2kload), never a bundled one
"$VENV/bin/python" - <<'EOF'
import pyvips, glymur
assert pyvips.type_find("VipsForeign", "jp2kload") != 0, "pyvips in the bench venv has no jp2kload"
print(f"bench venv: pyvips {pyvips.__version__} over libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} "
      f"(api mode: {pyvips.API_mode}); glymur {glymur.__version__} over OpenJPEG {glymur.version.openjpeg_version}")
EOF

# ---- source images (project's pyvips) ----
PROJ_PY=$ROOT/.venv/bin/python
[ -x "$PROJ_PY" ] || PROJ_PY=$VENV/bin/python
make_src() {  # make_src OUT W H BANDS BITS
  [ -s "$1" ] && return 0
  echo "drawing $1 ($2x$3, $4 band(s), $5-bit)"
  "$PROJ_PY" - "$@" <<'EOF'
import sys, pyvips
out, W, H, bands, bits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def band(k):
    # multi-scale Gaussian noise (fine grain to blotches) + two gradients: compresses like a photo
    # far more than white noise would, and every codestream tile is different
    acc = None
    for scale, amp in ((1, 10.0), (4, 18.0), (16, 30.0), (64, 40.0)):
        n = pyvips.Image.gaussnoise(W // scale + 2, H // scale + 2, sigma=1.0, mean=0.0, seed=97 * k + scale)
        if scale > 1:
            n = n.resize(scale, kernel="cubic")
        n = n.crop(0, 0, W, H) * amp
        acc = n if acc is None else acc + n
    xyz = pyvips.Image.xyz(W, H)
    grad = xyz[0] * (90.0 / W) + xyz[1] * ((40.0 + 20 * k) / H)
    return acc + grad + 60.0
img = band(0) if bands == 1 else band(0).bandjoin([band(1), band(2)])
if bits == 16:
    img = (img * 256.0).cast("ushort")
else:
    img = img.cast("uchar")
# pyvips-binary's libvips has no ppmsave: write binary PPM/PGM (maxval 255 or 65535, big-endian) by hand
data = img.write_to_memory()
if bits == 16:
    import numpy as np
    data = np.frombuffer(data, dtype="<u2").byteswap().tobytes()
with open(out + ".part", "wb") as f:
    f.write(b"P6" if bands == 3 else b"P5")
    f.write(f"\n{W} {H}\n{(1 << bits) - 1}\n".encode())
    f.write(data)
import os
os.replace(out + ".part", out)
EOF
}
make_src "$JP2BENCH/src/rgb8.ppm" 10000 7500 3 8
make_src "$JP2BENCH/src/grey16.pgm" 10000 7500 1 16
make_src "$JP2BENCH/src/small.ppm" 2000 1500 3 8

encode() {  # encode SRC OUT [extra opts...]   (the issue's options, or given ones)
  local src=$1 out=$2; shift 2
  [ -s "$out" ] && return 0
  echo "opj_compress -> $out"
  local t0=$SECONDS
  opj_compress -i "$src" -o "$out.part.${out##*.}" "$@" -threads 2 >"$JP2BENCH/src/$(basename "$out").log" 2>&1 \
    || { cat "$JP2BENCH/src/$(basename "$out").log" >&2; exit 1; }
  mv "$out.part.${out##*.}" "$out"
  echo "  $(du -h "$out" | cut -f1), $((SECONDS - t0)) s"
}
# -threads only speeds the encoder up; the codestream is the same
encode "$JP2BENCH/src/rgb8.ppm" "$IMG/rgb8.jp2" "${OPJ_OPTS[@]}"
encode "$JP2BENCH/src/grey16.pgm" "$IMG/grey16.jp2" "${OPJ_OPTS[@]}"
encode "$JP2BENCH/src/small.ppm" "$IMG/layers.jp2" -n 7 -b 64,64 -c '[256,256],[256,256],[128,128]' \
  -p RPCL -r 80,40,20 -t 1024,1024 -SOP

# ---- HTJ2K ----
# opj_compress 2.5.0 has no HT mode (OpenJPEG 2.5 decodes HTJ2K, it does not encode it); grk_compress
# -M 64 writes HT but without -r/-q rate control; ojph_compress writes lossy HT with -qstep.
if [ ! -s "$IMG/rgb8-ht.j2c" ]; then
  if command -v ojph_compress >/dev/null; then
    echo "ojph_compress -> $IMG/rgb8-ht.j2c"
    t0=$SECONDS
    ojph_compress -i "$JP2BENCH/src/rgb8.ppm" -o "$IMG/rgb8-ht.part.j2c" -num_decomps 6 -block_size '{64,64}' \
      -precincts '{256,256},{256,256},{128,128}' -prog_order RPCL -tile_size '{1024,1024}' \
      -reversible false -qstep "${HT_QSTEP:-0.05}" >"$JP2BENCH/src/rgb8-ht.log" 2>&1 \
      || { cat "$JP2BENCH/src/rgb8-ht.log" >&2; exit 1; }
    mv "$IMG/rgb8-ht.part.j2c" "$IMG/rgb8-ht.j2c"
    echo "  $(du -h "$IMG/rgb8-ht.j2c" | cut -f1), $((SECONDS - t0)) s"
  else
    echo "HTJ2K: no encoder here (no ojph_compress); the HT row is skipped"
  fi
fi
ls -l "$IMG"
