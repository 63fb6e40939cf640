"""Training of the sound-event classifier (``sonopolis train-detector``).

Training-time only: needs torch (a dev dependency). Inference never imports this
package; it only needs numpy and onnxruntime.
"""
