"""The video data room: builders, clip sampling, augmentation and the tf.data pipeline.

Only this package imports TensorFlow. Models, objectives and the train step never do.
"""
