"""Object storage backends. ``local`` is built in; S3 and GCS are optional extras."""
