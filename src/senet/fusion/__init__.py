"""Two-stream RGB + event-camera object detection with SE fusion (the seed's DSEC / PKU-DDD17-Car rows).

The "SENet" rows of CAFR / FRN (Cao et al., ECCV 2024, arXiv 2407.12582; docs/detection.md): a ResNet-50
stream for RGB frames and one for event-camera data, fused at every scale, an FPN and a RetinaNet head.
"""
