//! [`multiversion!`]: a function whose body is compiled twice, for the baseline x86-64 the binary
//! targets and for AVX2 + FMA, the one picked at run time. For loops written so that the compiler
//! vectorises them (independent lanes, no calls): AVX2 doubles the lanes and adds 32-bit integer
//! products. Rust fuses a product and a sum into one rounding only where asked (`mul_add`), so both
//! versions round alike.

/// Defines `fn $name`, whose body runs compiled for AVX2 + FMA where the CPU has them.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use multiversion;
