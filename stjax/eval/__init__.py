"""The evaluation room: linear probes on frozen features, and the reports a person looks at.

- `linear_probe`: extract frozen features once, then train a softmax-regression probe on them.
- `report`: a PNG (pretraining loss + probe accuracies) and small text/markdown tables.
"""
