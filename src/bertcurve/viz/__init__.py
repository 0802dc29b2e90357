"""Drawing learning curves: figures (``figures``) and CJK fonts (``fonts``)."""
