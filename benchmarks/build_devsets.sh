#!/usr/bin/env bash
# benchmarks/build_devsets.sh [OUT_DIR]          (default OUT_DIR=devsets, beside where it runs)
#
# Builds small REAL-PHOTO image-classification dev sets from Debian packages
# (fetched with `apt-get download`, unpacked with dpkg-deb), as ImageFolder trees:
#
#   OUT/<name>/{train,test}/<class>/<file>.jpg|png        seeded ~70/30 split per class
#   OUT/<name>/masks/{train,test}/<class>/<file>.png       only tuxpaint-other-masked (255 = object)
#   OUT/<name>/metadata.csv  classes.txt  README.txt        provenance, licence and credit per image
#
# Data sets (choose with DEVSETS="a b c"; default all three):
#   gcompris-photos        gcompris-qt-data 3.1-2                 5 classes, 226 photos (28-73/class), no masks
#   stellarium-dso         stellarium-data 0.22.2-1               5 classes, 464 telescope photos (54-210/class), no masks
#   tuxpaint-other-masked  tuxpaint-stamps-default 2022.06.04-1   6 classes, 103 alpha cut-out photos + masks
#                          (stamp categories: coins, household, vehicles, space, tools, instruments; SMALL: 11-26 per class)
#
# Knobs (environment): MAX_SIDE=256 (longest side in px, 0 = keep original size), SEED=0,
#   TEST_FRAC=0.3, MAX_PER_CLASS=0 (0 = all; e.g. 60 gives a balanced, faster stellarium-dso),
#   GCOMPRIS_HOUSEHOLD=1 (add a 6th gcompris class, household_objects, with only 17 photos),
#   DEVSETS_CACHE=OUT/_cache (downloaded .deb files + unpacked trees, reused on later runs),
#   DEVSETS_VENV=OUT/_venv (made only if python3 lacks pillow/numpy; needs PyPI through pip).
# Needs: bash, apt-get (Debian registry reachable; runs `apt-get update` once if a download fails),
#   dpkg-deb, tar, python3 with pillow (webp support) + numpy.
set -euo pipefail

OUT="${1:-devsets}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
CACHE="${DEVSETS_CACHE:-$OUT/_cache}"
export DEVSETS="${DEVSETS:-gcompris-photos stellarium-dso tuxpaint-other-masked}"
mkdir -p "$CACHE/debs" "$CACHE/x"
chmod 755 "$CACHE" "$CACHE/debs" 2>/dev/null || true   # lets apt's _apt user write there (no warning)
T0=$(date +%s)

# ---------------------------------------------------------------- python + pillow + numpy
PY=python3
if ! python3 -c 'import PIL, numpy; from PIL import features; assert features.check("webp")' 2>/dev/null; then
  VENV="${DEVSETS_VENV:-$OUT/_venv}"
  if ! "$VENV/bin/python" -c 'import PIL, numpy; from PIL import features; assert features.check("webp")' 2>/dev/null; then
    echo "[devsets] creating venv $VENV with pillow + numpy (pip)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check pillow numpy
  fi
  PY="$VENV/bin/python"
fi

# ---------------------------------------------------------------- Debian packages
fetch_deb() {  # fetch_deb PKG VERSION -> prints path of the .deb
  local pkg=$1 ver=$2 f
  f=$(ls "$CACHE/debs/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$f" ]; then
    ( cd "$CACHE/debs"
      apt-get download -q "$pkg=$ver" >&2 2>/dev/null || {
        apt-get update -qq >&2 || true     # fresh machines have no package lists yet
        apt-get download -q "$pkg=$ver" >&2 || {
          echo "[devsets] WARNING: $pkg=$ver not available, taking the candidate version" >&2
          apt-get download -q "$pkg" >&2; }
      } )
    f=$(ls "$CACHE/debs/${pkg}_"*.deb | head -n1)
  fi
  echo "$f"
}
unpack() {  # unpack PKG DEB [TAR-OPTION...] MEMBER... (only the members we need)
  local pkg=$1 deb=$2; shift 2
  local dst="$CACHE/x/$pkg"
  if [ ! -f "$dst/.done" ] || [ "$(cat "$dst/.done")" != "$(basename "$deb")" ]; then
    rm -rf "$dst"; mkdir -p "$dst"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dst" "$@"
    basename "$deb" > "$dst/.done"
  fi
}
for s in $DEVSETS; do
  case "$s" in
    gcompris-photos)
      deb=$(fetch_deb gcompris-qt-data 3.1-2)
      unpack gcompris-qt-data "$deb" ./usr/share/doc/gcompris-qt-data \
        ./usr/share/gcompris-qt/rcc/{categorization,erase,explore_world_animals,explore_farm_animals,explore_monuments}.rcc ;;
    stellarium-dso)
      deb=$(fetch_deb stellarium-data 0.22.2-1)
      unpack stellarium-data "$deb" ./usr/share/stellarium/nebulae ./usr/share/doc/stellarium-data ;;
    tuxpaint-other-masked)
      deb=$(fetch_deb tuxpaint-stamps-default 2022.06.04-1)
      unpack tuxpaint-stamps-default "$deb" --exclude='*.ogg' --exclude='*.wav' \
        ./usr/share/tuxpaint/stamps ./usr/share/doc/tuxpaint-stamps-default ;;
    *) echo "[devsets] unknown data set: $s" >&2; exit 2 ;;
  esac
done
T1=$(date +%s)
echo "[devsets] packages ready in $((T1-T0)) s; building trees with $PY"

# ---------------------------------------------------------------- build the trees
"$PY" - "$OUT" "$CACHE" <<'PYEOF'
import os, sys, re, io, gzip, glob, struct, zlib, random, csv, shutil, collections, time, hashlib
import numpy as np
from PIL import Image

OUT, CACHE = sys.argv[1], sys.argv[2]
X = os.path.join(CACHE, 'x')
MAX_SIDE = int(os.environ.get('MAX_SIDE', '256'))
SEED = int(os.environ.get('SEED', '0'))
TEST_FRAC = float(os.environ.get('TEST_FRAC', '0.3'))
MAX_PER_CLASS = int(os.environ.get('MAX_PER_CLASS', '0'))  # 0 = keep all (seeded subsample otherwise)
GREY = (128, 128, 128)
SETS = os.environ['DEVSETS'].split()

def deb_version(pkg):
    f = glob.glob(os.path.join(CACHE, 'debs', pkg + '_*.deb'))[0]
    return os.path.basename(f).split('_')[1].replace('%3a', ':')

def shrink(im, resample=Image.LANCZOS):
    if MAX_SIDE and max(im.size) > MAX_SIDE:
        s = MAX_SIDE / max(im.size)
        im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), resample)
    return im

def dhash(im):  # 256-bit difference hash, for near-duplicate removal
    a = np.asarray(im.convert('L').resize((17, 16), Image.BILINEAR), dtype=np.int16)
    return (a[:, 1:] > a[:, :-1]).flatten()

def safe(s):
    return re.sub(r'[^A-Za-z0-9._-]+', '_', s).strip('_')

def write_set(name, items, pkg, note, masked=False, near_dup=True):
    """items: list of dict(cls, stem, img(PIL RGB), mask(PIL L or None), src, license, credit)
    near_dup=True: drop near-duplicates by 256-bit dHash (<=10 bits apart); False: exact pixel duplicates only
    (dHash is unreliable for small objects on black sky, where it reports false duplicates)."""
    root = os.path.join(OUT, name)
    if os.path.isdir(root):
        shutil.rmtree(root)
    items.sort(key=lambda d: (d['cls'], d['stem']))   # first in sorted order wins
    kept, hashes, exact, dropped = [], [], set(), []
    for d in items:
        e = hashlib.md5(d['img'].tobytes()).hexdigest()
        h = dhash(d['img'])
        if e in exact or (near_dup and any(int((h != g).sum()) <= 10 for g in hashes)):
            dropped.append(d['src']); continue
        exact.add(e); hashes.append(h); kept.append(d)
    by = collections.defaultdict(list)
    for d in kept:
        by[d['cls']].append(d)
    ver = deb_version(pkg)
    rows, counts = [], {}
    for cls in sorted(by):
        lst = sorted(by[cls], key=lambda d: d['stem'])
        rng = random.Random('%d-%s-%s' % (SEED, name, cls))
        rng.shuffle(lst)
        if MAX_PER_CLASS:
            lst = lst[:MAX_PER_CLASS]
        n_test = max(1, int(round(TEST_FRAC * len(lst))))
        counts[cls] = (len(lst) - n_test, n_test)
        for i, d in enumerate(lst):
            split = 'test' if i < n_test else 'train'
            ext = '.png' if masked else '.jpg'
            fn = d['stem'] + ext
            p = os.path.join(root, split, cls, fn)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            if masked:
                d['img'].save(p, optimize=False, compress_level=6)
            else:
                d['img'].save(p, quality=92)
            if d.get('mask') is not None:
                mp = os.path.join(root, 'masks', split, cls, d['stem'] + '.png')
                os.makedirs(os.path.dirname(mp), exist_ok=True)
                d['mask'].save(mp)
            rows.append([split, cls, '%s/%s/%s' % (split, cls, fn), pkg, ver, d['src'], d['license'], d['credit']])
    with open(os.path.join(root, 'metadata.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['split', 'class', 'file', 'source_package', 'source_version', 'source_path', 'license', 'credit'])
        w.writerows(rows)
    with open(os.path.join(root, 'classes.txt'), 'w') as f:
        f.write('\n'.join(sorted(by)) + '\n')
    lines = ['%s: %s' % (name, note), 'source: Debian package %s %s' % (pkg, ver),
             'MAX_SIDE=%d SEED=%d TEST_FRAC=%.2f MAX_PER_CLASS=%d masks=%s'
             % (MAX_SIDE, SEED, TEST_FRAC, MAX_PER_CLASS, 'yes' if masked else 'no'),
             'class train test']
    lines += ['%s %d %d' % (c, a, b) for c, (a, b) in counts.items()]
    lines.append('total %d %d' % (sum(a for a, _ in counts.values()), sum(b for _, b in counts.values())))
    if dropped:
        lines.append('near-duplicates dropped: ' + ', '.join(dropped))
    open(os.path.join(root, 'README.txt'), 'w').write('\n'.join(lines) + '\n')
    print('\n'.join(lines) + '\n', flush=True)

# ====================================================== gcompris-photos
def rcc_files(path):
    """Qt resource (.rcc) reader: returns {path: bytes}."""
    b = open(path, 'rb').read()
    assert b[:4] == b'qres', path
    ver, tree, data, names = struct.unpack('>IIII', b[4:20])
    nodesz = 14 if ver < 2 else 22
    out = {}
    def name(off):
        o = names + off
        n, = struct.unpack('>H', b[o:o + 2])
        return b[o + 6:o + 6 + 2 * n].decode('utf-16-be')
    def walk(idx, prefix):
        o = tree + idx * nodesz
        noff, flags = struct.unpack('>IH', b[o:o + 6])
        p = prefix + '/' + name(noff) if idx else prefix
        if flags & 2:
            cnt, first = struct.unpack('>II', b[o + 6:o + 14])
            for i in range(cnt):
                walk(first + i, p)
        else:
            doff, = struct.unpack('>I', b[o + 10:o + 14])
            d = data + doff
            ln, = struct.unpack('>I', b[d:d + 4])
            raw = b[d + 4:d + 4 + ln]
            if flags & 1:
                raw = zlib.decompress(raw[4:])
            elif flags & 4:
                raise RuntimeError('zstd-compressed rcc entry not supported: ' + p)
            out[p] = raw
    walk(0, '')
    return out

def gcompris_credits(files):
    """Parse the per-folder README files (Copyright/Source/License/Files blocks)."""
    cred = {}
    for p, raw in files.items():
        if not p.endswith('/README'):
            continue
        base = os.path.dirname(p)
        for block in re.split(r'\n\s*\n', raw.decode('utf-8', 'replace')):
            info, fl, in_files = {}, [], False
            for line in block.splitlines():
                m = re.match(r'^(Copyright|Source|License|Comments|Files):\s*(.*)$', line.strip())
                if m:
                    in_files = m.group(1) == 'Files'
                    if in_files:
                        fl += m.group(2).split()
                    else:
                        info[m.group(1)] = m.group(2).strip()
                elif in_files and line.strip():
                    fl += line.split()
            for f in fl:
                cred[base + '/' + f] = info
    return cred

def build_gcompris():
    rcc = os.path.join(X, 'gcompris-qt-data/usr/share/gcompris-qt/rcc')
    files = {}
    for r in ['categorization', 'erase', 'explore_world_animals', 'explore_farm_animals', 'explore_monuments']:
        files.update(rcc_files(os.path.join(rcc, r + '.rcc')))
    cred = gcompris_credits(files)
    A = '/gcompris/src/activities/'
    rules = [
        ('animals', A + r'erase/resource/[^/]+\.webp$'),
        ('animals', A + r'explore_(world|farm)_animals/resource/animals/[^/]+\.webp$'),
        ('fish', A + r'categorization/resource/images/fishes/[^/]+\.webp$'),
        ('tools', A + r'categorization/resource/images/tools/[^/]+\.webp$'),
        ('monuments', A + r'categorization/resource/images/monuments/[^/]+\.webp$'),
        ('monuments', A + r'explore_monuments/resource/[^/]+/[^/]+\.webp$'),
        ('renewable_energy', A + r'categorization/resource/images/renewable/[^/]+\.webp$'),
    ]
    if os.environ.get('GCOMPRIS_HOUSEHOLD') == '1':
        rules.append(('household_objects', A + r'categorization/resource/images/others/[^/]+\.webp$'))
    items = []
    for p in sorted(files):
        for cls, rx in rules:
            if re.match(rx, p):
                im = Image.open(io.BytesIO(files[p])).convert('RGB')
                c = cred.get(p, {})
                act = p[len(A):].split('/')[0]
                items.append(dict(cls=cls, stem=safe(act + '_' + os.path.splitext(os.path.basename(p))[0]),
                                  img=shrink(im), mask=None, src=p,
                                  license=c.get('License', 'not listed in upstream README; package GPL-3+ (debian/copyright)'),
                                  credit=(c.get('Copyright', '') + ' ' + c.get('Source', '')).strip()))
                break
    write_set('gcompris-photos', items, 'gcompris-qt-data',
              'real photos (Wikimedia Commons / publicdomainpictures) used by GCompris activities; whole scenes, no masks')

# ====================================================== stellarium-dso
# Stellarium NebulaType enum (src/core/modules/Nebula.hpp, 0.22)
STEL_GROUPS = {0: 'galaxy', 1: 'galaxy', 2: 'galaxy', 3: 'galaxy',
               5: 'open_cluster', 6: 'open_cluster', 7: 'globular_cluster', 11: 'planetary_nebula',
               14: 'emission_nebula', 15: 'emission_nebula', 16: 'emission_nebula', 17: 'emission_nebula'}
# dropped (too few images): 12 dark nebula, 13 reflection nebula, 18 supernova remnant, 19/23 ISM/molecular cloud, 28 star

def stel_catalog(path):
    b = gzip.open(path).read()
    pos = [0]
    def u32():
        v, = struct.unpack_from('>I', b, pos[0]); pos[0] += 4; return v
    def f64():
        v, = struct.unpack_from('>d', b, pos[0]); pos[0] += 8; return v
    def qs():
        n = u32()
        if n == 0xFFFFFFFF:
            return ''
        s = b[pos[0]:pos[0] + n].decode('utf-16-be'); pos[0] += n; return s
    qs(); qs()  # catalog version, edition
    cats = ['NGC', 'IC', 'M', 'C', 'B', 'Sh2', 'VdB', 'RCW', 'LDN', 'LBN', 'Cr', 'Mel', 'PGC', 'UGC']
    idx = collections.defaultdict(dict)
    while pos[0] < len(b):
        o = {'id': u32()}
        f64(); f64(); f64(); f64()                 # ra, dec, bmag, vmag
        o['type'] = u32(); qs()                    # type, morphological type
        f64(); f64(); u32()                        # major, minor axis, orientation
        for _ in range(6): f64()                   # redshift(+err), parallax(+err), distance(+err)
        for k in cats: o[k] = u32()
        qs(); u32(); u32()                         # Ced, Arp, VV
        for _ in range(7): qs()                    # PK PNG SNRG ACO HCG ESO VdBH
        for _ in range(5): u32()                   # DWB Tr St Ru VdBHa
        for k in cats:
            if o[k]:
                idx[k].setdefault(o[k], o)
    return idx

def build_stellarium():
    D = os.path.join(X, 'stellarium-data/usr/share/stellarium/nebulae/default')
    idx = stel_catalog(os.path.join(D, 'catalog.dat'))
    txt = open(os.path.join(D, 'textures.json'), encoding='utf-8').read()
    # credits: the imageCredits entry that precedes each imageUrl in the same sub-tile
    credit_of, last = {}, ''
    for m in re.finditer(r'"imageCredits"\s*:\s*\{([^}]*)\}|"imageUrl"\s*:\s*"([^"]+)"', txt):
        if m.group(1) is not None:
            last = ' '.join(re.findall(r'"[^"]*"\s*:\s*"([^"]*)"', m.group(1)))
        else:
            credit_of[m.group(2)] = last; last = ''
    pats = [(r'm(\d+)', 'M'), (r'n(\d+)', 'NGC'), (r'ic(\d+)', 'IC'), (r'u(\d+)', 'UGC'), (r'p(\d+)', 'PGC'),
            (r'sh2-(\d+)', 'Sh2'), (r'barnard(\d+)', 'B'), (r'rcw(\d+)', 'RCW'), (r'ldn(\d+)', 'LDN'),
            (r'lbn(\d+)', 'LBN'), (r'vdb(\d+)', 'VdB')]
    items, seen_obj = [], set()
    for fn in sorted(credit_of):
        o = None
        for rx, cat in pats:
            m = re.match(rx, fn.lower())
            if m:
                o = idx[cat].get(int(m.group(1))); break
        if o is None or o['type'] not in STEL_GROUPS or o['id'] in seen_obj:
            continue  # unnamed mosaics (LMC/SMC tiles, galaxy clusters...), rare types, same object twice
        seen_obj.add(o['id'])
        im = Image.open(os.path.join(D, fn))
        if im.mode in ('P', 'LA', 'RGBA', 'PA'):
            im = im.convert('RGBA')
            bg = Image.new('RGBA', im.size, (0, 0, 0, 255)); bg.alpha_composite(im); im = bg
        items.append(dict(cls=STEL_GROUPS[o['type']], stem=safe(os.path.splitext(fn)[0]), img=shrink(im.convert('RGB')),
                          mask=None, src='usr/share/stellarium/nebulae/default/' + fn,
                          license='per-image permission, see usr/share/doc/stellarium-data/copyright (sec. 4.7-4.25)',
                          credit=credit_of[fn]))
    write_set('stellarium-dso', items, 'stellarium-data',
              'telescope photos of deep-sky objects, class = object type from Stellarium catalog.dat; no masks',
              near_dup=False)  # one image per catalogue object already (M/NGC aliases resolved via catalog ids)

# ====================================================== tuxpaint-other-masked
TUX = {  # hand-checked real photos (mirrored duplicates left out)
    'coins': ['symbols/money/canadian/coins/*.png', 'symbols/money/euro/coins/*.png',
              'symbols/money/us/coins/*.png', 'symbols/money/japanese/*.png'],
    'household_objects': ['household/Lightbulb.png', 'household/arttools/highlighter.png', 'household/arttools/pen_dryerase.png',
                          'household/cylinder.png', 'household/dishes/pitcher_small.png', 'household/dishes/teapot.png',
                          'household/dishes/utensils/nutcracker.png', 'household/dishes/utensils/pepper_grinder.png',
                          'household/garbagecan.png', 'household/home_compost_bin.png', 'household/kettle.png',
                          'household/key.png', 'household/rubberduck.png', 'household/toilet.png', 'household/wheelie_bin.png',
                          'medical/bandage_adhesive.png', 'medical/mercurythermometer.png', 'medical/stethoscope.png',
                          'medical/syringe.png', 'hobbies/binoculars.png', 'hobbies/camera_35mm.png'],
    'tools': ['household/tools/cementmixer.png', 'household/tools/hammer.png', 'household/tools/mallet_metal.png',
              'household/tools/measuring_tape.png', 'household/tools/paintbrush_large.png', 'household/tools/plyers.png',
              'household/tools/saw.png', 'household/tools/spade.png', 'household/tools/toolbox.png',
              'household/tools/wrench.png', 'household/tools/wrench_adjustable.png', 'household/tools/wrench_plumbers.png',
              'household/arttools/scissors_small_closed.png', 'household/arttools/scissors_small_open.png'],
    'vehicles': ['vehicles/auto/beetle.png', 'vehicles/auto/sedan.png', 'vehicles/auto/sportscar2.png', 'vehicles/auto/truck.png',
                 'vehicles/construction/dumper.png', 'vehicles/cycle/pink_tricycle.png', 'vehicles/emergency/firetruck.png',
                 'vehicles/flight/planes/747.png', 'vehicles/garbagetruck.png', 'vehicles/masstransit/green_korean_bus.png',
                 'vehicles/race/indycar.png', 'vehicles/ship/chineseJunk.png', 'vehicles/ship/walnutBoat.png',
                 'military/vehicles/bradley.png', 'military/vehicles/f22_raptor.png', 'military/vehicles/infantry-stryker.png',
                 'military/vehicles/ww2_german_gun.png'],
    'space': ['space/moon/moon_3qt.png', 'space/moon/moon_crescent.png', 'space/moon/moon_full.png',
              'space/planets/1_mercury.png', 'space/planets/2_venus.png', 'space/planets/3_earth.png', 'space/planets/4_mars.png',
              'space/planets/5_jupiter.png', 'space/planets/7_uranus.png', 'space/planets/8_neptune.png',
              'space/planets/9_pluto.png', 'space/apollo_lander.png', 'space/spacewalk.png', 'space/voyager2.png'],
    'music_instruments': ['hobbies/music/*/*.png'],
}

def build_tuxpaint():
    S = os.path.join(X, 'tuxpaint-stamps-default/usr/share/tuxpaint/stamps')
    items = []
    for cls, pats in TUX.items():
        files = []
        for pat in pats:
            hit = sorted(glob.glob(os.path.join(S, pat)))
            if not hit:
                print('WARNING: no stamp matches', pat)
            files += [f for f in hit if '_mirror' not in f and '/cartoon/' not in f]
        for f in files:
            im = Image.open(f).convert('RGBA')
            a = np.asarray(im)[..., 3]
            ys, xs = np.nonzero(a >= 128)
            if len(xs) == 0:
                continue
            im = im.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            side = int(round(max(im.size) * 1.1))           # square canvas, 5% margin each side
            canvas = Image.new('RGBA', (side, side), (0, 0, 0, 0))
            canvas.paste(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
            canvas = shrink(canvas)
            bg = Image.new('RGBA', canvas.size, GREY + (255,)); bg.alpha_composite(canvas)
            mask = Image.fromarray(np.where(np.asarray(canvas)[..., 3] >= 128, 255, 0).astype(np.uint8), 'L')
            rel = os.path.relpath(f, S)
            items.append(dict(cls=cls, stem=safe(os.path.splitext(rel)[0].replace('/', '_')), img=bg.convert('RGB'),
                              mask=mask, src='usr/share/tuxpaint/stamps/' + rel, license='GPL-2+ (debian/copyright)',
                              credit='Tux Paint stamps, Bill Kendrick et al.'))
    write_set('tuxpaint-other-masked', items, 'tuxpaint-stamps-default',
              'alpha cut-out photos composited on grey (128); masks 255=object. SMALL classes (<25) - smoke tests only',
              masked=True)

t = time.time()
for s in SETS:
    {'gcompris-photos': build_gcompris, 'stellarium-dso': build_stellarium,
     'tuxpaint-other-masked': build_tuxpaint}[s]()
print('[devsets] trees built in %.1f s' % (time.time() - t))
PYEOF
echo "[devsets] done in $(( $(date +%s) - T0 )) s -> $OUT"
