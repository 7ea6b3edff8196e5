# The command-line session of docs/line.md on the shared MVTec AD bottle: fit on 52 normal images, two updates with
# 5 more each, the history, a restore of the first version (byte-identical), a threshold from 5 defects.
#   OMP_NUM_THREADS=1 bash studies/line_update/cli_session.sh /tmp/line_session > studies/line_update/results/cli_session.txt 2>&1
set -e
S=${SCGAN:-scgan}
SRC=$(cd "$(dirname "$0")/../../.." && pwd)/shared/data/mvtec_ad/bottle
mkdir -p "$1" && cd "$1"
mkdir -p line/train/good more1 more2 defects
ls $SRC/train/good/*.png | head -52 | xargs -I{} ln -s {} line/train/good/
ls $SRC/train/good/*.png | sed -n 53,57p | xargs -I{} ln -s {} more1/
ls $SRC/train/good/*.png | sed -n 58,62p | xargs -I{} ln -s {} more2/
ls $SRC/test/broken_large/*.png | head -5 | xargs -I{} ln -s {} defects/
echo '$ scgan train --dataset folder --root line --output run'
$S train --dataset folder --root line --output run 2>&1 | tail -2
echo '$ scgan update --checkpoint run/model.pt --output run/model-2.pt more1'
$S update --checkpoint run/model.pt --output run/model-2.pt more1
echo '$ scgan update --checkpoint run/model-2.pt --output run/model-3.pt more2'
$S update --checkpoint run/model-2.pt --output run/model-3.pt more2
echo '$ scgan history run/model-3.pt'
$S history run/model-3.pt
FIRST=$(sha256sum run/model.pt | cut -c1-12)
echo "\$ scgan history run/model-3.pt --restore $FIRST --output restored.pt"
$S history run/model-3.pt --restore $FIRST --output restored.pt
echo '$ sha256sum run/model.pt restored.pt'
sha256sum run/model.pt restored.pt
echo '$ scgan calibrate --checkpoint run/model-3.pt --output run/model-4.pt --defects defects --catch 0.95'
$S calibrate --checkpoint run/model-3.pt --output run/model-4.pt --defects defects --catch 0.95 2>&1
echo '$ scgan calibrate --checkpoint run/model-3.pt --output run/model-5.pt --defects defects --false-alarms 0.01'
$S calibrate --checkpoint run/model-3.pt --output run/model-5.pt --defects defects --false-alarms 0.01 2>&1 || echo "(exit $?)"
