"""``make walkthrough``: the labeling workflow on sample data with the command line alone (no
Label Studio; ``make demo`` shows the service itself):
1. sample images (synthetic fluorescence nuclei in two time-lapse sequences; the real
   2018 Data Science Bowl nuclei image too when ../shared/data is beside the repository);
2. ``label-assistant prelabel``: Otsu pre-labels;
3. an annotator's partial annotations, simulated from the pre-labels: a few whole objects plus
   background around them, the rest unlabeled; one annotator forgot the background;
4. post-assistance cleanup of each annotation, with the pixels each operation changed;
5. ``label-assistant inspect``: the inspection report and the admit/quarantine gate.

Everything is written under ``demo-data/walkthrough/`` (ignored by git); running it again
starts afresh.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]  # the repository
DEMO = ROOT / "demo-data" / "walkthrough"
SHARED_NUCLEI = ROOT.parent / "shared" / "data" / "stardist_dsb2018_sample"


def _step(title: str) -> None:
    print(f"\n=== {title}")


def main() -> int:
    from label_assistant.assist.post import cleanup
    from label_assistant.cli import main as cli
    from label_assistant.devtools.samples import nuclei_sequence
    from label_assistant.images import read_image
    from label_assistant.labelmap import BACKGROUND, UNLABELED
    from label_assistant.model.sparsify import sparsify

    if DEMO.exists():
        shutil.rmtree(DEMO)
    images_dir, prelabels_dir = DEMO / "images", DEMO / "prelabels"
    annotations_dir, cleaned_dir = DEMO / "annotations", DEMO / "cleaned"
    for d in (images_dir, annotations_dir, cleaned_dir):
        d.mkdir(parents=True)

    _step("1. sample images")
    for sample in nuclei_sequence("seqA", 3, seed=1) + nuclei_sequence("seqB", 3, seed=2):
        Image.fromarray(sample.image).save(images_dir / f"{sample.name}.png")
    if SHARED_NUCLEI.is_dir():
        shutil.copy(SHARED_NUCLEI / "images" / sorted(p.name for p in (
            SHARED_NUCLEI / "images").iterdir())[0], images_dir / "dsb2018_nuclei.png")
    names = sorted(p.stem for p in images_dir.iterdir())
    print(f"{len(names)} images in {images_dir.relative_to(ROOT)}: {', '.join(names)}")

    _step("2. Otsu pre-labels: label-assistant prelabel demo-data/images --out demo-data/prelabels")
    if cli(["prelabel", str(images_dir), "--out", str(prelabels_dir)]) != 0:
        print("demo: pre-labeling failed", file=sys.stderr)
        return 1

    _step("3. partial annotations (simulated annotator) + 4. cleanup")
    for i, name in enumerate(names):
        prelabel = read_image(prelabels_dir / f"{name}.png")[..., 0]
        annotation = sparsify(prelabel, 0.15, band=4, seed=i)
        if i == 1:  # this annotator drew objects only, no background: the gate must stop it
            annotation[annotation == BACKGROUND] = UNLABELED
        Image.fromarray(annotation).save(annotations_dir / f"{name}.png")
        result = cleanup(annotation)
        Image.fromarray(result.label_map).save(cleaned_dir / f"{name}.png")
        labeled = (annotation != UNLABELED).mean()
        changes = ", ".join(f"{op} {px}" for op, px in result.changes.items())
        print(f"{name}: {labeled:.0%} of pixels labeled; cleanup changed: {changes}")

    _step("5. inspection and gate:  label-assistant inspect demo-data/images demo-data/cleaned")
    code = cli(["inspect", str(images_dir), str(cleaned_dir), "--classes", "Nucleus",
                "--min-class-pixels", "5000"])
    if code not in (0, 1):  # 1 = some annotations quarantined, which the demo shows on purpose
        print("demo: inspection failed", file=sys.stderr)
        return 1

    print(f"\nDone. Images, pre-labels, annotations and cleaned annotations are in "
          f"{DEMO.relative_to(ROOT)}/; one annotation without background was quarantined.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
