"""Brain maps: per-vertex or per-voxel values on the cortex, offline.

- :func:`plot_brain_map` (a matplotlib Figure) and :func:`view_brain_map` (interactive HTML) for
  fsaverage surfaces (drawn on nilearn's bundled fsaverage5), volumes (a mask image or fitted
  masker, over nilearn's bundled MNI152 template) and ds003020 subjects (a :class:`Mapper`);
- :func:`write_brain_maps`: the study's maps (pretrained alignment, brain-tuned minus
  pretrained and minus each control, significance-masked) as PNG and HTML files;
- :func:`build_mapper` / :func:`load_mapper`: a subject's pycortex flatmap as sparse matrices
  (built once with pycortex; drawn without it);
- :func:`to_fsaverage5`: finer fsaverage data on the nested fsaverage5 mesh.

Names are imported lazily, so importing this package loads neither matplotlib nor nilearn.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "plot_brain_map": ".brainmap",
    "view_brain_map": ".brainmap",
    "brain_map_values": ".brainmap",
    "volume_image": ".brainmap",
    "write_brain_maps": ".maps",
    "Mapper": ".mapper",
    "build_mapper": ".mapper",
    "load_mapper": ".mapper",
    "SURFACE_SPACES": ".surfaces",
    "fsaverage5_surfaces": ".surfaces",
    "to_fsaverage5": ".surfaces",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
