"""Input feeds for runners: random arrays from input metadata, or arrays loaded from .npy/.npz files.

Pure numpy (no torch; onnx only to read a file's stored shapes), so the CLI and every backend share one
way to make inputs. This package is the one import for all of it; each job lives in one of its modules:

- :mod:`dcn_deploy.feeds.shape_options`: :func:`parse_shape_options` reads ``--shape`` (``name=1x3x64x64`` or
  ``name:1x3x64x64``) and, given the model file, adds the example shapes :func:`dcn_deploy.export` stored in it
  (:data:`EXAMPLE_SHAPES_KEY`) for the inputs the user did not name, so a dynamic model runs without ``--shape``.
- :mod:`dcn_deploy.feeds.onnx_file_inputs`: what an ONNX file says about its inputs: :func:`read_onnx_file`,
  :func:`stored_example_shapes`, the inputs a run feeds (:func:`fed_inputs`), and the inputs that are RoI boxes
  (:func:`roi_inputs`, :func:`roi_input_names`).
- :mod:`dcn_deploy.feeds.shape_resolution`: :func:`resolve_shapes` turns each input's metadata (fixed and dynamic
  dimensions) plus what the user gave (``--shape name=1x3x64x64``, ``--batch 8``) into concrete shapes, or says
  which dimension is missing; :func:`fixed_batch` and :func:`fixed_batch_error` for a model with one batch size.
- :mod:`dcn_deploy.feeds.random_feeds`: :func:`random_feed` fills those shapes with reproducible random data (a fixed
  seed per call); inputs that :func:`roi_inputs` finds feeding a RoI op get valid boxes instead of noise.
- :mod:`dcn_deploy.feeds.feed_files`: :func:`load_feed` reads ``name=file.npy`` / ``file.npz`` arguments and checks
  names, dtypes and shapes, and that RoI boxes name images of the batch and lie at finite places
  (:func:`check_roi_batch_indices`).
- :mod:`dcn_deploy.feeds.shapes`: shapes as text (:func:`parse_shape`, :func:`format_shape`) and :class:`FeedError`,
  which all of them raise.
"""
from __future__ import annotations

from .feed_files import Note, check_array, check_roi_batch_indices, load_feed
from .onnx_file_inputs import (EXAMPLE_SHAPES_KEY, Dim, fed_inputs, read_onnx_file, roi_input_names, roi_inputs,
                               stored_example_shapes)
from .random_feeds import box_image, random_array, random_boxes, random_feed
from .shape_options import parse_shape_options, reject_empty
from .shape_resolution import DEFAULT_BOX_COUNT, fixed_batch, fixed_batch_error, resolve_shapes
from .shapes import FeedError, Shape, format_shape, parse_shape

__all__ = ["DEFAULT_BOX_COUNT", "Dim", "EXAMPLE_SHAPES_KEY", "FeedError", "Note", "Shape", "box_image", "check_array",
           "check_roi_batch_indices", "fed_inputs", "fixed_batch", "fixed_batch_error", "format_shape",
           "load_feed", "parse_shape", "parse_shape_options", "random_array", "random_boxes", "random_feed",
           "read_onnx_file", "reject_empty", "resolve_shapes", "roi_input_names", "roi_inputs",
           "stored_example_shapes"]
