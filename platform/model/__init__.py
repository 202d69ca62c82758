"""The model: timm ViTs and their weight sources (the offline DINOv2 conversion),
the split into head, body and tail with soft prompts, the split model built once for
every process (`build`), and the arithmetic precision.
"""
