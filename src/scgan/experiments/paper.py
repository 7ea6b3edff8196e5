"""The paper's published numbers (image AUROC %), for side-by-side columns. Dai et al., IEEE Access 2023."""
from __future__ import annotations

# Table 1 (MVTec AD).
SCGAN_MVTEC = {
    "carpet": 97.0, "grid": 96.3, "leather": 94.7, "tile": 97.4, "wood": 100.0, "bottle": 98.3, "cable": 98.2,
    "capsule": 83.2, "hazelnut": 97.5, "metal_nut": 90.1, "pill": 89.4, "screw": 100.0, "toothbrush": 100.0,
    "transistor": 91.3, "zipper": 92.4,
}
GANOMALY_MVTEC = {
    "carpet": 82.1, "grid": 74.3, "leather": 80.8, "tile": 72.0, "wood": 92.0, "bottle": 79.4, "cable": 71.1,
    "capsule": 72.1, "hazelnut": 87.4, "metal_nut": 69.4, "pill": 67.1, "screw": 100.0, "toothbrush": 70.0,
    "transistor": 80.8, "zipper": 74.4,
}
# Table 2 (BTAD), products 01, 02, 03.
SCGAN_BTAD = {"01": 99.8, "02": 93.8, "03": 97.1}
# Table 3: number of CopyPaste patches N.
N_PATCHES = {
    10: {"carpet": 94.4, "grid": 95.6, "leather": 92.3, "tile": 97.7, "wood": 98.8, "bottle": 99.2, "cable": 96.4,
         "capsule": 85.1, "hazelnut": 96.6, "metal_nut": 83.5, "pill": 92.0, "screw": 100.0, "toothbrush": 98.8,
         "transistor": 92.4, "zipper": 89.6},
    30: SCGAN_MVTEC,
    50: {"carpet": 96.2, "grid": 96.8, "leather": 89.9, "tile": 95.9, "wood": 99.6, "bottle": 93.5, "cable": 95.6,
         "capsule": 85.6, "hazelnut": 93.2, "metal_nut": 90.4, "pill": 92.2, "screw": 96.5, "toothbrush": 95.0,
         "transistor": 91.1, "zipper": 92.2},
    100: {"carpet": 94.4, "grid": 94.1, "leather": 87.4, "tile": 91.1, "wood": 94.7, "bottle": 98.6, "cable": 93.4,
          "capsule": 86.4, "hazelnut": 88.2, "metal_nut": 86.2, "pill": 87.3, "screw": 95.0, "toothbrush": 93.1,
          "transistor": 87.7, "zipper": 89.5},
}
# Tables 4-5: Struc1 = neither, Struc2 = SSIM only, Struc3 = MS-CAM only, Struc4 = both.
STRUCTURES = {
    "struc1": {"carpet": 86.5, "grid": 96.4, "leather": 87.8, "tile": 96.5, "wood": 96.4, "bottle": 95.1,
               "cable": 93.2, "capsule": 83.4, "hazelnut": 93.6, "metal_nut": 86.3, "pill": 85.2, "screw": 94.5,
               "toothbrush": 100.0, "transistor": 88.2, "zipper": 87.5},
    "struc2": {"carpet": 94.2, "grid": 95.6, "leather": 89.9, "tile": 95.4, "wood": 98.4, "bottle": 97.0,
               "cable": 92.1, "capsule": 85.5, "hazelnut": 94.1, "metal_nut": 88.4, "pill": 91.8, "screw": 94.6,
               "toothbrush": 100.0, "transistor": 92.6, "zipper": 87.4},
    "struc3": {"carpet": 94.9, "grid": 94.7, "leather": 94.9, "tile": 91.0, "wood": 96.8, "bottle": 92.3,
               "cable": 95.8, "capsule": 87.9, "hazelnut": 89.1, "metal_nut": 91.1, "pill": 86.3, "screw": 97.5,
               "toothbrush": 100.0, "transistor": 89.9, "zipper": 90.4},
    "struc4": SCGAN_MVTEC,
}
# Table 6: only group averages are published.
AUGMENTATION_AVERAGES = {
    "cutout": {"texture": 65.1, "object": 76.8, "all": 73.2},
    "cutout_color": {"texture": 66.4, "object": 77.9, "all": 75.3},
    "confetti": {"texture": 85.7, "object": 82.5, "all": 83.9},
    "copypaste": {"texture": 91.9, "object": 94.0, "all": 92.6},
    "copypaste_color": {"texture": 97.1, "object": 92.1, "all": 94.4},
}
