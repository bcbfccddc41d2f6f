"""Evaluation metrics behind ``mmcli evaluate``, one module per family.

- :mod:`mmcli.metrics.captions`: the COCO caption metrics (BLEU-1..4, ROUGE-L, CIDEr-D) with the
  same numbers as pycocoevalcap, its Java PTB tokenisation included, computed in pure Python
  (:mod:`~mmcli.metrics.ptb_tokenizer`, :mod:`~mmcli.metrics.coco_scorers`); METEOR and SPICE
  through pycocoevalcap when Java is available (:mod:`~mmcli.metrics.java`).
- :mod:`mmcli.metrics.retrieval`, :mod:`mmcli.metrics.classification`: ranking and classification
  metrics; :mod:`mmcli.metrics.clipscore`: CLIPScore / RefCLIPScore through the encoder package.

Modules are imported on demand (``from mmcli.metrics.captions import evaluate_captions``), so
importing this package costs nothing.
"""
