//! Serde defaults from named constants.
//!
//! `#[serde(default = "...")]` takes a function path; one const-generic
//! function serves every numeric default, so each field names its
//! constant in place instead of through a one-line wrapper function.

/// `N`, as a serde default: `#[serde(default = "crate::defaults::u32_of::<CONST>")]`.
pub(crate) const fn u32_of<const N: u32>() -> u32 {
    N
}
