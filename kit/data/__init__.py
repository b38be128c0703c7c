"""Getting and reading the data: download, Kaggle client, index, images, tf.data pipeline, augmentation."""
