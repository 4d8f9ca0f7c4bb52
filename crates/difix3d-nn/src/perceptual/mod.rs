//! Perceptual image distances built on ImageNet feature networks (`backbone`: torchvision's VGG16 and
//! AlexNet features): LPIPS (`lpips`), an eval metric next to PSNR/SSIM and a Difix training loss, and
//! Difix3D's Gram-matrix style loss (`gram`). All are differentiable burn code.

pub mod backbone;
pub mod gram;
pub mod lpips;
