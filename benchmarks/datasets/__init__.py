from .base import ConceptDataset, ConceptHierarchy, DatasetError
from .shapes import make_shapes
