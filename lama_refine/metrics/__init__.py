"""What lama-refine-eval measures beyond PSNR and SSIM: LPIPS (lpips) and the paired statistics and
LaMa's mask-area bins of a comparison (stats).
"""
