"""Chapter 3: natural textures from single-layer networks with random filters.

Implements Ustyuzhaninov, Brendel, Gatys & Bethge (2017), *What does it take to
generate natural textures?* (thesis ch. 3 and appendix paper):

- :mod:`~reprlab.textures.images`      bundled textures, user images, natural-image patches
- :mod:`~reprlab.textures.filterbanks` the filter banks of section 2 (random, Fourier, PCA, k-means)
- :mod:`~reprlab.textures.fftconv`     'same' convolution of large kernels by FFT with cached spectra
- :mod:`~reprlab.textures.model`       single conv layer + nonlinearity, Gram matrices, eqs. (1)-(3), (5)
- :mod:`~reprlab.textures.synthesis`   section 4: L-BFGS-B (scipy) or projected torch optimisers, box [0, 1]
- :mod:`~reprlab.textures.vgg`         section 5: VGG-19 Gram loss, eqs. (6)-(7), local weights only
- :mod:`~reprlab.textures.metrics`     download-free quality metrics, appendix Fig. 6 and Fig. 3 checks
- :mod:`~reprlab.textures.baseline`    Portilla-Simoncelli synthesis through plenoptic (the peer)
- :mod:`~reprlab.textures.inpainting`  appendix Fig. 7
"""

from reprlab.textures.filterbanks import (
    BANK_NAMES,
    MULTISCALE_SIZES,
    FilterBank,
    make_bank,
    random_bank,
    random_multiscale_bank,
)
from reprlab.textures.images import bundled_textures, load_texture, natural_image_patches
from reprlab.textures.model import TextureModel, gram_distance, gram_matrix, pixel_distance
from reprlab.textures.synthesis import SynthesisResult, synthesize

__all__ = [
    "BANK_NAMES",
    "MULTISCALE_SIZES",
    "FilterBank",
    "SynthesisResult",
    "TextureModel",
    "bundled_textures",
    "gram_distance",
    "gram_matrix",
    "load_texture",
    "make_bank",
    "natural_image_patches",
    "pixel_distance",
    "random_bank",
    "random_multiscale_bank",
    "synthesize",
]
