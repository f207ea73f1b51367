//! Dense f32 matrix products on row-major slices, for the training ops in [`crate::ops`].
//!
//! The ops call these directly instead of building candle tensors around every product, so a
//! GEMM writes (or accumulates) into a buffer the op already owns: no output allocation, no
//! copy in or out, and `C += A·B` where a gradient or a LoRA delta is added to a base result.
//! Two backends sit behind one signature: the `gemm` crate (what candle itself uses; its
//! AVX2/FMA kernels on stable Rust) and, when the crate is built with the `openblas` cfg (see
//! `build.rs`), the system OpenBLAS, whose `DYNAMIC_ARCH` build picks its kernel for the CPU
//! at run time (AVX-512 ones where the CPU has them; `OPENBLAS_CORETYPE` overrides). OpenBLAS
//! is preferred when built in: whole training steps take markedly less CPU time on it. It runs
//! single-threaded here and each product is split over rayon's pool, so the training uses
//! exactly one set of `RAYON_NUM_THREADS` threads and nothing oversubscribes the cores.
//! `DEMORECON_GEMM=gemm` forces the `gemm` crate where both are built in.
//!
//! This module is not a general linear-algebra layer: row-major f32 only, shapes checked by
//! the callers' construction (a slice too short is an error, not a panic).

use rayon::prelude::*;
use std::sync::OnceLock;

/// How an operand is read: as stored (`N`) or transposed (`T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    N,
    T,
}

/// The backend products run on, chosen once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The `gemm` crate, parallel over rayon's pool.
    GemmCrate,
    /// The system OpenBLAS, single-threaded per call, the output split over rayon's pool.
    OpenBlas,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::GemmCrate => "gemm crate",
            Backend::OpenBlas => "OpenBLAS",
        }
    }
}

/// The backend in use (OpenBLAS when built in, unless `DEMORECON_GEMM=gemm`).
pub fn backend() -> Backend {
    static CHOSEN: OnceLock<Backend> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let forced = std::env::var("DEMORECON_GEMM").ok();
        if openblas::AVAILABLE && forced.as_deref() != Some("gemm") {
            openblas::init();
            Backend::OpenBlas
        } else {
            Backend::GemmCrate
        }
    })
}

/// One line naming the backend and, for OpenBLAS, its build and the kernel it picked.
pub fn describe() -> String {
    match backend() {
        Backend::GemmCrate => format!(
            "gemm crate ({} rayon threads)",
            rayon::current_num_threads()
        ),
        Backend::OpenBlas => format!(
            "{} (core {}; 1 thread per call, split over {} rayon threads)",
            openblas::config(),
            openblas::core_name(),
            rayon::current_num_threads()
        ),
    }
}

/// `C = alpha · op(A) · op(B) + (accumulate ? C : 0)`, all dense row-major: `op(A)` is
/// `m × k` (`A` stored `m × k`, or `k × m` when transposed), `op(B)` is `k × n`, `C` is
/// `m × n`. Large products are split over rayon's threads.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    c: &mut [f32],
    accumulate: bool,
) -> candle_core::Result<()> {
    let lda = if op_a == Op::N { k } else { m };
    let ldb = if op_b == Op::N { n } else { k };
    run(
        Strided { m, n, k, alpha },
        (a, op_a, lda),
        (b, op_b, ldb),
        (c, n),
        accumulate,
        true,
    )
}

/// The shape and factor of a product over strided operands.
#[derive(Debug, Clone, Copy)]
pub struct Strided {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
}

/// [`gemm`] over sub-matrices: each operand is `(values from its first element, op, leading
/// dimension)` — the row stride of the stored matrix — so column blocks of wider matrices can
/// be read and written in place.
pub fn gemm_strided(
    shape: Strided,
    a: (&[f32], Op, usize),
    b: (&[f32], Op, usize),
    c: (&mut [f32], usize),
    accumulate: bool,
) -> candle_core::Result<()> {
    run(shape, a, b, c, accumulate, true)
}

/// [`gemm_strided`] on the calling thread alone, for blocks inside an already parallel loop.
pub fn gemm_block(
    shape: Strided,
    a: (&[f32], Op, usize),
    b: (&[f32], Op, usize),
    c: (&mut [f32], usize),
    accumulate: bool,
) -> candle_core::Result<()> {
    run(shape, a, b, c, accumulate, false)
}

/// Values a stored operand read as `rows × cols` through `op` with leading dimension `ld`
/// spans.
fn span(op: Op, rows: usize, cols: usize, ld: usize) -> Option<usize> {
    let (outer, inner) = match op {
        Op::N => (rows, cols),
        Op::T => (cols, rows),
    };
    (ld >= inner).then(|| (outer - 1) * ld + inner)
}

fn run(
    shape: Strided,
    (a, op_a, lda): (&[f32], Op, usize),
    (b, op_b, ldb): (&[f32], Op, usize),
    (c, ldc): (&mut [f32], usize),
    accumulate: bool,
    parallel: bool,
) -> candle_core::Result<()> {
    let Strided { m, n, k, .. } = shape;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let fits = |need: Option<usize>, have: usize| need.is_some_and(|need| need <= have);
    if !fits(span(Op::N, m, n, ldc), c.len())
        || (k > 0
            && (!fits(span(op_a, m, k, lda), a.len()) || !fits(span(op_b, k, n, ldb), b.len())))
    {
        candle_core::bail!(
            "gemm {m}×{k}·{k}×{n} (ld {lda}, {ldb}, {ldc}): operands of {}, {} and {} values",
            a.len(),
            b.len(),
            c.len()
        );
    }
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].fill(0.0);
            }
        }
        return Ok(());
    }
    let a = Mat::new(a, op_a, lda);
    let b = Mat::new(b, op_b, ldb);
    match backend() {
        Backend::GemmCrate => gemm_crate(shape, a, b, c, ldc, accumulate, parallel),
        Backend::OpenBlas if parallel => split(shape, a, b, c, ldc, accumulate),
        Backend::OpenBlas => openblas::sgemm(shape, a, b, c, ldc, accumulate),
    }
    Ok(())
}

/// A stored row-major operand read through `op`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    op: Op,
    /// The stored matrix's row stride.
    ld: usize,
}

impl<'a> Mat<'a> {
    fn new(data: &'a [f32], op: Op, ld: usize) -> Self {
        Mat { data, op, ld }
    }

    /// Element strides of the logical (`op`-applied) matrix: (between rows, between columns).
    fn strides(&self) -> (usize, usize) {
        match self.op {
            Op::N => (self.ld, 1),
            Op::T => (1, self.ld),
        }
    }

    /// The logical matrix from its column `c` on.
    fn starting_at_col(&self, c: usize) -> Self {
        Mat {
            data: &self.data[c * self.strides().1..],
            ..*self
        }
    }

    /// The logical matrix from its row `r` on.
    fn starting_at_row(&self, r: usize) -> Self {
        Mat {
            data: &self.data[r * self.strides().0..],
            ..*self
        }
    }
}

fn gemm_crate(
    shape: Strided,
    a: Mat,
    b: Mat,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    let Strided { m, n, k, alpha } = shape;
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        ::gemm::Parallelism::Rayon(threads)
    } else {
        ::gemm::Parallelism::None
    };
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    // SAFETY: `run` checked that each slice covers its logical matrix under these strides
    // (`span`), and `c` is borrowed mutably, so nothing else reads or writes it meanwhile.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.data.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Splits `C` over rayon's threads, each block computed by one single-threaded OpenBLAS
/// call: into blocks of rows when it is taller than wide, else into blocks of columns, so each
/// call packs only its share of the larger operand (splitting the 128 × 49,152 output-layer
/// product by rows would make every thread pack the whole embedding matrix).
fn split(shape: Strided, a: Mat, b: Mat, c: &mut [f32], ldc: usize, accumulate: bool) {
    let Strided { m, n, k, .. } = shape;
    let threads = rayon::current_num_threads().max(1);
    // Below ~1 MFLOP, or with too little to share, a second thread costs more than it saves.
    let parts = if 2 * m * n * k < 1 << 20 || m.max(n) < 32 {
        1
    } else {
        threads
    };
    if parts == 1 {
        openblas::sgemm(shape, a, b, c, ldc, accumulate);
        return;
    }
    if m >= n {
        let rows = m.div_ceil(parts).next_multiple_of(8).min(m);
        let used = (m - 1) * ldc + n;
        c[..used]
            .par_chunks_mut(rows * ldc)
            .enumerate()
            .for_each(|(i, block)| {
                let r0 = i * rows;
                let sub = Strided {
                    m: rows.min(m - r0),
                    ..shape
                };
                openblas::sgemm(sub, a.starting_at_row(r0), b, block, ldc, accumulate);
            });
        return;
    }
    let cols = n.div_ceil(parts).next_multiple_of(16).min(n);
    let out = OutPtr(c.as_mut_ptr());
    (0..n.div_ceil(cols)).into_par_iter().for_each(|j| {
        let c0 = j * cols;
        let sub = Strided {
            n: cols.min(n - c0),
            ..shape
        };
        let out = &out;
        // SAFETY: `run` checked `c` covers the `m × n` matrix with row stride `ldc`; block `j`
        // is its columns `c0..c0 + sub.n` of every row, which no other block touches, and `c`
        // stays mutably borrowed by this function until every block has returned.
        unsafe {
            openblas::sgemm_raw(
                sub,
                a,
                b.starting_at_col(c0),
                out.0.add(c0),
                ldc,
                accumulate,
            )
        };
    });
}

/// The output of a column-split product, shared by the blocks' threads.
struct OutPtr(*mut f32);

// SAFETY: the blocks write disjoint elements through it (see `split`).
unsafe impl Sync for OutPtr {}

#[cfg(openblas)]
mod openblas {
    //! The system OpenBLAS through its CBLAS symbols.

    use super::{Mat, Op, Strided};
    use std::ffi::{CStr, c_char, c_int};

    pub const AVAILABLE: bool = true;

    #[link(name = "openblas")]
    unsafe extern "C" {
        fn cblas_sgemm(
            layout: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
        fn openblas_set_num_threads(n: c_int);
        fn openblas_get_corename() -> *const c_char;
        fn openblas_get_config() -> *const c_char;
    }

    const ROW_MAJOR: c_int = 101;
    const NO_TRANS: c_int = 111;
    const TRANS: c_int = 112;

    /// One OpenBLAS thread per call: the parallelism is rayon's.
    pub fn init() {
        // SAFETY: a plain setter with no pointer arguments.
        unsafe { openblas_set_num_threads(1) }
    }

    fn text(ptr: *const c_char) -> String {
        if ptr.is_null() {
            return "?".into();
        }
        // SAFETY: OpenBLAS returns pointers to static NUL-terminated strings.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .trim()
            .to_string()
    }

    pub fn core_name() -> String {
        // SAFETY: no arguments; returns a static string.
        text(unsafe { openblas_get_corename() })
    }

    pub fn config() -> String {
        // SAFETY: no arguments; returns a static string.
        text(unsafe { openblas_get_config() })
    }

    fn trans(op: Op) -> c_int {
        match op {
            Op::N => NO_TRANS,
            Op::T => TRANS,
        }
    }

    /// `C = alpha·op(A)·op(B) (+ C)` for an `m × n` `C` with row stride `ldc`.
    pub fn sgemm(shape: Strided, a: Mat, b: Mat, c: &mut [f32], ldc: usize, accumulate: bool) {
        // SAFETY: `c` is exclusively borrowed and, as the callers checked, covers the block.
        unsafe { sgemm_raw(shape, a, b, c.as_mut_ptr(), ldc, accumulate) }
    }

    /// [`sgemm`] writing through a pointer, for blocks of columns of a shared output.
    ///
    /// # Safety
    /// `c` must point at an `m × n` block with row stride `ldc` inside one allocation that no
    /// one else reads or writes during the call.
    pub unsafe fn sgemm_raw(
        shape: Strided,
        a: Mat,
        b: Mat,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let Strided { m, n, k, alpha } = shape;
        // SAFETY: the callers checked every operand covers its logical matrix (for blocks: the
        // offset slices still do, as the block lies inside the full matrix), the leading
        // dimensions are those of the stored matrices, and `c` is the caller's to write.
        unsafe {
            cblas_sgemm(
                ROW_MAJOR,
                trans(a.op),
                trans(b.op),
                m as c_int,
                n as c_int,
                k as c_int,
                alpha,
                a.data.as_ptr(),
                a.ld as c_int,
                b.data.as_ptr(),
                b.ld as c_int,
                if accumulate { 1.0 } else { 0.0 },
                c,
                ldc as c_int,
            )
        }
    }
}

#[cfg(not(openblas))]
mod openblas {
    //! Built without OpenBLAS: never chosen.

    use super::{Mat, Strided};

    pub const AVAILABLE: bool = false;

    pub fn init() {}

    pub fn core_name() -> String {
        String::new()
    }

    pub fn config() -> String {
        String::new()
    }

    pub fn sgemm(shape: Strided, a: Mat, b: Mat, c: &mut [f32], ldc: usize, accumulate: bool) {
        super::gemm_crate(shape, a, b, c, ldc, accumulate, false)
    }

    /// Never called: `split` runs only with OpenBLAS.
    pub unsafe fn sgemm_raw(
        _shape: Strided,
        _a: Mat,
        _b: Mat,
        _c: *mut f32,
        _ldc: usize,
        _accumulate: bool,
    ) {
        unreachable!("OpenBLAS is not built in")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], oa: Op, b: &[f32], ob: Op) -> Vec<f32> {
        let at = |i: usize, p: usize| match oa {
            Op::N => a[i * k + p],
            Op::T => a[p * m + i],
        };
        let bt = |p: usize, j: usize| match ob {
            Op::N => b[p * n + j],
            Op::T => b[j * k + p],
        };
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
            }
        }
        c
    }

    #[test]
    fn every_transpose_and_accumulate_matches_the_naive_product() {
        // Shapes large enough to be split over threads, tall and wide.
        for &(m, n, k) in &[(3, 5, 7), (130, 40, 70), (20, 300, 90)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
                .collect();
            for oa in [Op::N, Op::T] {
                for ob in [Op::N, Op::T] {
                    let want = naive(m, n, k, &a, oa, &b, ob);
                    let mut c = vec![1f32; m * n];
                    gemm(m, n, k, 2.0, &a, oa, &b, ob, &mut c, true).unwrap();
                    for (got, want) in c.iter().zip(&want) {
                        assert!((got - (1.0 + 2.0 * want)).abs() < 1e-3, "{got} {want}");
                    }
                    gemm(m, n, k, 1.0, &a, oa, &b, ob, &mut c, false).unwrap();
                    for (got, want) in c.iter().zip(&want) {
                        assert!((got - want).abs() < 1e-3, "{got} {want}");
                    }
                }
            }
        }
        let mut c = vec![0f32; 4];
        assert!(
            gemm(
                2,
                2,
                3,
                1.0,
                &[0.0; 5],
                Op::N,
                &[0.0; 6],
                Op::N,
                &mut c,
                false
            )
            .is_err()
        );
    }
}
