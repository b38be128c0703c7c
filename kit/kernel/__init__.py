"""`kit kernel`: run the current config in a Kaggle kernel (bundle, push, status, output)."""
