"""BERT MLM pretraining: settings (``config``), batches and masking, the model, learning-rate
schedules, checkpoints, the metrics log and the ``Trainer`` that ties them together."""
