//! Which kernels run: the run-time CPU checks, and the `DROPNET_KERNELS` choice.
//!
//! dropnet has two families of vector kernels besides its portable code, and each family is
//! compiled with exactly one set of target features:
//!
//! | family | `#[target_feature(enable = …)]` | run when |
//! | --- | --- | --- |
//! | AVX-512 (GEMM, dropout, optimizer) | [`AVX512_FEATURES`] | [`avx512`] is true |
//! | AVX2 (GEMM) | [`AVX2_FEATURES`] | [`avx2`] is true |
//!
//! [`avx512`] and [`avx2`] are true only when the CPU reports every feature of their family's set
//! (a test checks that no kernel enables any other set), so calling a kernel of a family when its
//! check is true is sound. `DROPNET_KERNELS=auto|portable|avx2|avx512` picks the family: `auto`
//! (the default) the best the CPU has, `portable` none, so that the portable kernels can be tested
//! on any machine; asking for one the CPU lacks is an error ([`init_from_env`]).

use crate::error::{Error, Result};
use std::sync::OnceLock;

/// The target features of every AVX-512 kernel.
pub const AVX512_FEATURES: &str = "avx512f,avx512bw,avx512vl,avx512dq,bmi2";
/// The target features of every AVX2 kernel.
pub const AVX2_FEATURES: &str = "avx2,fma";

/// The kernels a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernels {
    Portable,
    Avx2,
    Avx512,
}

impl Kernels {
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Portable => "portable",
            Kernels::Avx2 => "avx2",
            Kernels::Avx512 => "avx512",
        }
    }
}

/// Whether the CPU has every feature of [`AVX512_FEATURES`].
pub fn detected_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("bmi2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the CPU has every feature of [`AVX2_FEATURES`].
pub fn detected_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The best kernels this CPU can run.
pub fn best() -> Kernels {
    if detected_avx512() {
        Kernels::Avx512
    } else if detected_avx2() {
        Kernels::Avx2
    } else {
        Kernels::Portable
    }
}

/// The kernels a `DROPNET_KERNELS` value asks for, if this CPU can run them.
pub fn resolve(request: &str) -> Result<Kernels> {
    let (wanted, available) = match request {
        "auto" | "" => return Ok(best()),
        "portable" => (Kernels::Portable, true),
        "avx2" => (Kernels::Avx2, detected_avx2()),
        "avx512" => (Kernels::Avx512, detected_avx512()),
        other => {
            return Err(Error::Config(format!("DROPNET_KERNELS={other}: expected auto, portable, avx2 or avx512")))
        }
    };
    if !available {
        let features = if wanted == Kernels::Avx512 { AVX512_FEATURES } else { AVX2_FEATURES };
        return Err(Error::Config(format!(
            "DROPNET_KERNELS={request}: this CPU lacks some of {features} (use auto or portable)"
        )));
    }
    Ok(wanted)
}

static SELECTED: OnceLock<Kernels> = OnceLock::new();

fn from_env() -> Result<Kernels> {
    match std::env::var("DROPNET_KERNELS") {
        Ok(value) => resolve(&value),
        Err(std::env::VarError::NotPresent) => Ok(best()),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::Config("DROPNET_KERNELS is not valid text".into())),
    }
}

/// Read `DROPNET_KERNELS` and fix the kernels of this process; an error for a value that is not
/// understood or asks for kernels the CPU lacks. Programs call this once at start (the CLI does);
/// a library user who does not gets the same choice on first use, with `auto` in place of a
/// request that cannot be served.
pub fn init_from_env() -> Result<Kernels> {
    let chosen = from_env()?;
    Ok(*SELECTED.get_or_init(|| chosen))
}

/// The kernels of this process.
#[inline]
pub fn kernels() -> Kernels {
    *SELECTED.get_or_init(|| from_env().unwrap_or_else(|_| best()))
}

/// Whether the AVX-512 kernels run: the CPU has [`AVX512_FEATURES`] and they were not turned off.
#[inline]
pub fn avx512() -> bool {
    kernels() == Kernels::Avx512
}

/// Whether the AVX2 kernels run: the CPU has [`AVX2_FEATURES`] and they were not turned off.
#[inline]
pub fn avx2() -> bool {
    kernels() >= Kernels::Avx2 && detected_avx2()
}

/// Runs `f` compiled for the widest vectors the selected kernels allow: the compiler vectorises
/// the elementwise loops inlined into it (pooling, activations) with AVX-512 or AVX2 instead of
/// the baseline SSE2. Rust never fuses a multiply and an add on its own, so every variant gives
/// the same bits.
#[inline(always)]
pub fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512() {
            // SAFETY: the check is exactly the wrapper's target features.
            return unsafe { with_avx512(f) };
        }
        if avx2() {
            // SAFETY: as above.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,bmi2")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_resolve_or_say_why_not() {
        assert_eq!(resolve("portable").unwrap(), Kernels::Portable);
        assert_eq!(resolve("auto").unwrap(), best());
        assert!(resolve("sse9").unwrap_err().to_string().contains("expected auto, portable"));
        match resolve("avx512") {
            Ok(k) => assert!(detected_avx512() && k == Kernels::Avx512),
            Err(e) => assert!(!detected_avx512() && e.to_string().contains("lacks"), "{e}"),
        }
    }

    #[test]
    fn every_kernel_enables_exactly_one_checked_feature_set() {
        // The soundness argument of the module docs, checked over the sources.
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = 0;
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, _) in text.match_indices("#[target_feature(enable = \"") {
                    let rest = &text[at + "#[target_feature(enable = \"".len()..];
                    let features = &rest[..rest.find('"').unwrap()];
                    assert!(
                        features == AVX512_FEATURES || features == AVX2_FEATURES,
                        "{}: a kernel enables \"{features}\", which no check in cpu.rs guards",
                        path.display()
                    );
                    found += 1;
                }
            }
        }
        assert!(found >= 8, "only {found} kernels found: the scan is looking in the wrong place");
    }
}
