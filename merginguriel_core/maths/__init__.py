"""The pure maths behind the built-in plugins: numbers in, numbers out, no plugin wiring.

Public, so that a third-party strategy or weighting can reuse it:

- :mod:`merginguriel_core.maths.tensors`: weighted averages and sums, sparsification masks
  (magnitude band, DARE, DELLA), TIES sign election and disjoint mean, importance-weighted
  (Fisher) and RegMean means.
- :mod:`merginguriel_core.maths.spherical`: mergekit's two-vector SLERP coefficients, the
  weighted Karcher mean on the sphere and Model Stock's ratio, all from a streamed Gram
  matrix.
- :mod:`merginguriel_core.maths.magnitude`: the exact k-th largest magnitude of tensors
  streamed in chunks (TIES and Breadcrumbs thresholds).
- :mod:`merginguriel_core.maths.weights`: similarity to weights (proportional, softmax, local
  Sinkhorn, the accuracy fit of ``learned``).
- :mod:`merginguriel_core.maths.voting`: votes and probabilities from K models' logits.
- :mod:`merginguriel_core.maths.metrics`: accuracy and macro-F1 from label ids.

Tensor functions take and return ``torch`` tensors; the selection, voting and metric
functions work on ``numpy`` arrays. None of them reads a file or the plugin registry.
"""
