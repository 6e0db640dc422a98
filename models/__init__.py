"""Model recipes (architectures, training, data synthesis) and the shipped default artifacts.

Workstation side: these modules import TensorFlow / Keras. The board never imports them.
"""
