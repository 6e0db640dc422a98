"""Pipelines: preprocessed model input -> engine -> decisions.

One module per modality; the daemon and the command line use the same classes.
:mod:`.runner` puts each on its source for the daemon.

- :mod:`.audio` -- :class:`~edge_runtime.pipelines.audio.KeywordSpotter`: float32
  16 kHz samples of any chunk size -> streaming log-mel (the one front end) ->
  the explicit-state step model (state carried, and reset in staggered lanes as
  the model was trained) -> posterior smoothing -> threshold on keyword classes
  -> refractory period -> :class:`~edge_runtime.pipelines.audio.Detection`
  ``(label, score, t)``, ``t`` in seconds from the stream start.
- :mod:`.vision` -- :class:`~edge_runtime.pipelines.vision.ImageClassifier`: an RGB frame ->
  the manifest's preprocessing -> engine -> top-k scores.
- :mod:`.runner` -- the :class:`~edge_runtime.pipelines.runner.Pipeline` base and its registry;
  one ``*_pipeline`` module per modality (:mod:`.vision_pipeline`, :mod:`.audio_pipeline`)
  registers a pipeline: its source, one of the models above, its read policy (latest frame wins
  for video, every chunk for audio) and stats -> :class:`~edge_runtime.events.Decision`.

Board side: numpy and one inference engine, never TensorFlow.
"""
