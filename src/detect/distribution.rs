//! Special functions and tail probabilities (negative binomial, normal) that the surprise test turns into p-values.
//!
//! Written here rather than pulled from statrs because statrs drags in nalgebra; the
//! algorithms are the textbook ones (Lanczos log-gamma, Lentz's continued fraction for the
//! regularised incomplete beta, a Chebyshev fit for erfc) and every function works in log
//! space so that a 40,000-report surge yields a finite surprise instead of a p-value of 0.

use std::f64::consts::PI;

/// Natural log of the gamma function for `x > 0` (Lanczos, g = 7, n = 9; ~1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        return (PI / (PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEF[0];
    for (i, c) in COEF.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// Natural log of the beta function B(a, b).
pub fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// Continued fraction for the incomplete beta (modified Lentz), valid for x < (a+1)/(a+b+2).
fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const MAX_ITERATIONS: usize = 20_000;
    const EPSILON: f64 = 1e-15;
    const TINY: f64 = 1e-300;
    let qab = a + b;
    let qap = a + 1.0;
    let qam = a - 1.0;
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=MAX_ITERATIONS {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < EPSILON {
            break;
        }
    }
    h
}

/// Natural log of the regularised incomplete beta I_x(a, b), for a, b > 0 and x in [0, 1].
pub fn ln_beta_regularized(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let ln_front = a * x.ln() + b * (-x).ln_1p() - ln_beta(a, b);
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front + beta_continued_fraction(a, b, x).ln() - a.ln()
    } else {
        // Complement branch: I_x(a,b) = 1 - I_{1-x}(b,a), evaluated without cancellation loss.
        let other = (ln_front + beta_continued_fraction(b, a, 1.0 - x).ln() - b.ln()).exp();
        (-other.min(1.0)).ln_1p()
    }
}

/// ln P(X >= k) for X ~ NegativeBinomial(mean, dispersion), variance = mean + dispersion * mean².
///
/// Uses P(X >= k) = I_{mean/(mean+r)}(k, r) with size r = 1/dispersion; `k` is rounded up
/// to the next integer so a fractional window count is treated conservatively.
pub fn ln_nb_upper_tail(k: f64, mean: f64, dispersion: f64) -> f64 {
    let k = k.ceil();
    if k <= 0.0 {
        return 0.0;
    }
    if mean <= 0.0 {
        return f64::NEG_INFINITY;
    }
    let size = 1.0 / dispersion;
    if k <= DIRECT_SUM_MAX_K {
        if let Some(tail) = nb_upper_tail_by_sum(k as u32, mean, size) {
            return tail.ln();
        }
    }
    ln_beta_regularized(k, size, mean / (mean + size))
}

/// Largest `k` whose upper tail is first tried as 1 − P(X < k) summed term by term.
const DIRECT_SUM_MAX_K: f64 = 128.0;
/// Smallest tail the direct sum answers; below it the subtraction loses too many digits
/// (the sum is good to ~1e-14, so the tail keeps ten significant digits).
const DIRECT_SUM_MIN_TAIL: f64 = 1e-4;

/// P(X >= k) = 1 − Σ_{i<k} P(X = i) by the pmf recurrence, when that tail is not tiny.
///
/// Most tests of a quiet series ask about a small count near its mean, where a few
/// multiply-adds replace the continued fraction (half the detector's time before this).
fn nb_upper_tail_by_sum(k: u32, mean: f64, size: f64) -> Option<f64> {
    let q = mean / (mean + size);
    // P(X = 0) = (size / (size + mean))^size; it may underflow, and then so does every
    // term below k (k <= 128), which is right: the tail is 1.
    let mut pmf = (-size * (mean / size).ln_1p()).exp();
    let mut below = 0.0;
    for i in 0..k {
        below += pmf;
        pmf *= (f64::from(i) + size) / f64::from(i + 1) * q;
    }
    let tail = 1.0 - below;
    (tail >= DIRECT_SUM_MIN_TAIL).then_some(tail)
}

/// ln P(X <= k) for X ~ NegativeBinomial(mean, dispersion); `k` is rounded down.
pub fn ln_nb_lower_tail(k: f64, mean: f64, dispersion: f64) -> f64 {
    let k = k.floor();
    if k < 0.0 {
        return f64::NEG_INFINITY;
    }
    if mean <= 0.0 {
        return 0.0;
    }
    let size = 1.0 / dispersion;
    ln_beta_regularized(size, k + 1.0, size / (mean + size))
}

/// ln P(Z >= z) for a standard normal Z (Numerical Recipes erfc fit, relative error < 1.2e-7).
pub fn ln_normal_upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    if x < 0.0 {
        // Below zero the tail is 1 - Q(-z), which is above one half: no log-space care needed.
        return (-(ln_erfc_positive(-x) - std::f64::consts::LN_2).exp()).ln_1p();
    }
    ln_erfc_positive(x) - std::f64::consts::LN_2
}

/// ln erfc(x) for x >= 0.
fn ln_erfc_positive(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t.ln() - x * x + poly
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, relative: f64) {
        let error = ((actual - expected) / expected).abs();
        assert!(
            error < relative,
            "actual {actual:e}, expected {expected:e}, relative error {error:e}"
        );
    }

    #[test]
    fn ln_gamma_matches_factorials_and_sqrt_pi() {
        close(ln_gamma(1.0).exp(), 1.0, 1e-13);
        close(ln_gamma(5.0).exp(), 24.0, 1e-13);
        close(ln_gamma(0.5).exp(), PI.sqrt(), 1e-13);
        // ln(100!) = 363.73937555556347
        close(ln_gamma(101.0), 363.739_375_555_563_47, 1e-13);
    }

    #[test]
    fn incomplete_beta_matches_closed_forms() {
        // I_x(1, b) = 1 - (1-x)^b and I_x(a, 1) = x^a.
        close(
            ln_beta_regularized(1.0, 3.0, 0.2).exp(),
            1.0 - 0.8f64.powi(3),
            1e-12,
        );
        close(
            ln_beta_regularized(4.0, 1.0, 0.7).exp(),
            0.7f64.powi(4),
            1e-12,
        );
        // I_0.5(a, a) = 1/2 by symmetry.
        close(ln_beta_regularized(7.5, 7.5, 0.5).exp(), 0.5, 1e-12);
    }

    #[test]
    fn the_direct_sum_agrees_with_the_continued_fraction_where_it_answers() {
        let mut answered = 0;
        for &dispersion in &[0.001, 0.05, 0.25, 1.0, 4.0] {
            for &mean in &[0.3, 1.0, 4.0, 15.0, 60.0, 120.0, 900.0] {
                for k in 1..=128u32 {
                    let size = 1.0 / dispersion;
                    let reference =
                        ln_beta_regularized(f64::from(k), size, mean / (mean + size)).exp();
                    if let Some(tail) = nb_upper_tail_by_sum(k, mean, size) {
                        close(tail, reference, 1e-9);
                        answered += 1;
                    } else {
                        assert!(
                            reference < 2.0 * DIRECT_SUM_MIN_TAIL,
                            "k {k} mean {mean} φ {dispersion}: {reference:e}"
                        );
                    }
                }
            }
        }
        // The fast path answers most of the grid (the counts at or below a few times the mean).
        assert_eq!(answered, 2_563);
    }

    #[test]
    fn geometric_tail_is_exact() {
        // Dispersion 1 is the geometric law: P(X >= k) = (mean/(1+mean))^k = 0.8^10 for mean 4.
        close(
            ln_nb_upper_tail(10.0, 4.0, 1.0).exp(),
            0.107_374_182_4,
            1e-12,
        );
        // And P(X <= 2) = 1 - 0.8^3 = 0.488.
        close(ln_nb_lower_tail(2.0, 4.0, 1.0).exp(), 0.488, 1e-12);
    }

    #[test]
    fn negative_binomial_tails_match_direct_summation() {
        // Reference values summed term by term in Python with math.lgamma.
        // mean 7, dispersion 0.2 (size 5): P(X >= 74).
        close(
            ln_nb_upper_tail(74.0, 7.0, 0.2).exp(),
            2.209_257_441_379_981_6e-13,
            1e-9,
        );
        // mean 74, dispersion 0.01 (size 100): P(X >= 136).
        close(
            ln_nb_upper_tail(136.0, 74.0, 0.01).exp(),
            1.595_613_024_544_653_7e-6,
            1e-9,
        );
        // mean 10, dispersion 0.5 (size 2): P(X >= 30).
        close(
            ln_nb_upper_tail(30.0, 10.0, 0.5).exp(),
            0.025_276_321_398_524_534,
            1e-9,
        );
        // Near-Poisson (size 10_000), mean 1: P(X >= 10) ~ Poisson 1.114e-7.
        close(
            ln_nb_upper_tail(10.0, 1.0, 1e-4).exp(),
            1.118_315_733_642_085_7e-7,
            1e-9,
        );
    }

    #[test]
    fn a_forty_thousand_report_surge_has_a_finite_log_tail() {
        let ln_p = ln_nb_upper_tail(40_000.0, 500.0, 0.05);
        assert!(ln_p.is_finite() && ln_p < -1_000.0, "ln p = {ln_p}");
    }

    #[test]
    fn normal_tail_matches_known_values() {
        close(ln_normal_upper_tail(0.0).exp(), 0.5, 1e-6);
        close(
            ln_normal_upper_tail(1.0).exp(),
            0.158_655_253_931_457_05,
            1e-6,
        );
        close(
            ln_normal_upper_tail(4.753_424_308_822_899).exp(),
            1e-6,
            1e-6,
        );
        close(
            ln_normal_upper_tail(-1.0).exp(),
            0.841_344_746_068_543,
            1e-6,
        );
        // Far tail stays finite: ln Q(40) = -804.608...
        close(ln_normal_upper_tail(40.0), -804.608_442_013_754_2, 1e-6);
    }
}
