"""The five swap points of refinement: each an abstract class with one method, its options beside it.

Downsampler and MaskDownsampler (downsample), PyramidBuilder (pyramid), DevicePartitioner (partition),
Refiner (refine); padding holds the pad helpers they share. conf/ has one group per part.
"""
