//! The normal distribution's tail and its inverse, for the phi-accrual
//! detector: `Q(z) = P(Z > z)` and `z = Q⁻¹(q)`.
//!
//! Both are classic rational approximations, accurate to about 1e-7
//! (relative) over the whole range, which is far below the noise of any
//! estimate they are applied to.

/// A non-negative duration in µs from a float, saturating (NaN is 0).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn us_from_f64(us: f64) -> u64 {
    // `as` saturates at the bounds and maps NaN to 0, which is what we want;
    // the clamp keeps sums of offsets far from overflow.
    us.clamp(0.0, 1e15) as u64
}

/// The complementary error function, `erfc(x)`, with a fractional error below
/// 1.2e-7 everywhere (Chebyshev fit; W. H. Press et al., *Numerical Recipes*,
/// §6.2).
pub(crate) fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let value = t * poly.exp();
    if x >= 0.0 {
        value
    } else {
        2.0 - value
    }
}

/// The upper tail of the standard normal distribution, `P(Z > z)`.
pub(crate) fn normal_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The `z` with `P(Z > z) = q`, for `0 < q < 1` (P. J. Acklam's rational
/// approximation of the normal quantile, relative error below 1.2e-9).
/// Values of `q` outside (0, 1) are clamped to ±8.5 standard deviations.
pub(crate) fn normal_tail_inverse(q: f64) -> f64 {
    const LIMIT: f64 = 8.5;
    if q.is_nan() || q <= 1e-17 {
        return LIMIT;
    }
    if q >= 1.0 - 1e-17 {
        return -LIMIT;
    }
    // Acklam computes the lower quantile x with P(Z < x) = p; the upper
    // quantile for q is x(1 - q) = -x(q).
    -lower_quantile(q).clamp(-LIMIT, LIMIT)
}

/// `x` with `P(Z < x) = p`, for `0 < p < 1`.
fn lower_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.024_25;
    let tail = |q: f64| {
        let r = (-2.0 * q.ln()).sqrt();
        (((((C[0] * r + C[1]) * r + C[2]) * r + C[3]) * r + C[4]) * r + C[5])
            / ((((D[0] * r + D[1]) * r + D[2]) * r + D[3]) * r + 1.0)
    };
    if p < P_LOW {
        tail(p)
    } else if p > 1.0 - P_LOW {
        -tail(1.0 - p)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_matches_known_values() {
        let known = [
            (0.0, 0.5),
            (1.0, 0.158_655_253_931_457),
            (2.0, 0.022_750_131_948_179),
            (3.0, 0.001_349_898_031_630),
            (5.0, 2.866_515_718_791_9e-7),
            (-1.0, 0.841_344_746_068_543),
        ];
        for (z, q) in known {
            let got = normal_tail(z);
            assert!(((got - q) / q).abs() < 1e-6, "Q({z}) = {got}, expected {q}");
        }
    }

    #[test]
    fn inverse_undoes_the_tail() {
        for z in [-4.0, -2.5, -1.0, -0.1, 0.0, 0.3, 1.0, 1.96, 3.0, 5.0, 7.5] {
            let back = normal_tail_inverse(normal_tail(z));
            assert!((back - z).abs() < 1e-5, "Q⁻¹(Q({z})) = {back}");
        }
    }

    #[test]
    fn inverse_clamps_outside_the_open_interval() {
        assert_eq!(normal_tail_inverse(0.0), 8.5);
        assert_eq!(normal_tail_inverse(1.0), -8.5);
        assert_eq!(normal_tail_inverse(f64::NAN), 8.5);
    }
}
