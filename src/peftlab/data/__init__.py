"""Data: sources (what a --dataset is), sampling + coverage, decoding, storage of decoded images, and
load_task, which puts them together for one run. See task.py for the flow."""

from .decoding import DecodeCache, Split, decode, decode_sample
from .sampling import coverage, coverage_problems, stratified_indices
from .sources import FMNIST_NAMES, FMNIST_TASKS, IMAGE_SUFFIXES, RawSplit, fmnist_classes, read_source
from .storage import cache_dir, is_mapped
from .task import Task, load_task, per_class_subsample

__all__ = [
    "FMNIST_NAMES",
    "FMNIST_TASKS",
    "fmnist_classes",
    "IMAGE_SUFFIXES",
    "DecodeCache",
    "RawSplit",
    "Split",
    "Task",
    "cache_dir",
    "coverage",
    "coverage_problems",
    "decode",
    "decode_sample",
    "is_mapped",
    "load_task",
    "per_class_subsample",
    "read_source",
    "stratified_indices",
]
