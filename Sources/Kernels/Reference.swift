#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Naive twins of the fast kernels: plain loops, Double accumulation, the C library's
/// erf and exp. They exist to be obviously right; tests hold the fast kernels to them.
/// Same signatures and conventions as the fast ones (outputs first, backward += ).
public enum Reference {
    /// C = alpha · op(A) · op(B) + beta · C (row-major)
    public static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                             a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        for i in 0 ..< m {
            for j in 0 ..< n {
                var s = 0.0
                for p in 0 ..< k {
                    let av = transA ? a[p * lda + i] : a[i * lda + p]
                    let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                    s += Double(av) * Double(bv)
                }
                let old = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
                c[i * ldc + j] = Float(Double(alpha) * s + old)
            }
        }
    }

    public static func linearForward(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                     bias: UnsafePointer<Float>?, rows: Int, inFeatures: Int, outFeatures: Int) {
        for r in 0 ..< rows {
            for o in 0 ..< outFeatures {
                var s = Double(bias?[o] ?? 0)
                for i in 0 ..< inFeatures { s += Double(x[r * inFeatures + i]) * Double(weight[o * inFeatures + i]) }
                y[r * outFeatures + o] = Float(s)
            }
        }
    }

    public static func linearBackward(dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>,
                                      dbias: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>,
                                      x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                      rows: Int, inFeatures: Int, outFeatures: Int) {
        if let dx {
            for r in 0 ..< rows {
                for i in 0 ..< inFeatures {
                    var s = 0.0
                    for o in 0 ..< outFeatures { s += Double(dy[r * outFeatures + o]) * Double(weight[o * inFeatures + i]) }
                    dx[r * inFeatures + i] += Float(s)
                }
            }
        }
        for o in 0 ..< outFeatures {
            for i in 0 ..< inFeatures {
                var s = 0.0
                for r in 0 ..< rows { s += Double(dy[r * outFeatures + o]) * Double(x[r * inFeatures + i]) }
                dweight[o * inFeatures + i] += Float(s)
            }
            if let dbias {
                var s = 0.0
                for r in 0 ..< rows { s += Double(dy[r * outFeatures + o]) }
                dbias[o] += Float(s)
            }
        }
    }

    public static func layerNormForward(y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
                                        rstd: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                                        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                        rows: Int, dim: Int, eps: Float) {
        for r in 0 ..< rows {
            var m = 0.0
            for i in 0 ..< dim { m += Double(x[r * dim + i]) }
            m /= Double(dim)
            var v = 0.0
            for i in 0 ..< dim { let c = Double(x[r * dim + i]) - m; v += c * c }
            v /= Double(dim)
            let s = 1 / (v + Double(eps)).squareRoot()
            mean[r] = Float(m); rstd[r] = Float(s)
            for i in 0 ..< dim {
                y[r * dim + i] = Float((Double(x[r * dim + i]) - m) * s * Double(weight[i]) + Double(bias[i]))
            }
        }
    }

    public static func layerNormBackward(dx: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>,
                                         dbias: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                                         x: UnsafePointer<Float>, mean: UnsafePointer<Float>,
                                         rstd: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                         rows: Int, dim: Int) {
        for r in 0 ..< rows {
            let m = Double(mean[r]), s = Double(rstd[r])
            var sg = 0.0, sgx = 0.0
            for i in 0 ..< dim {
                let xh = (Double(x[r * dim + i]) - m) * s
                let g = Double(dy[r * dim + i]) * Double(weight[i])
                sg += g; sgx += g * xh
                dweight[i] += Float(Double(dy[r * dim + i]) * xh)
                dbias[i] += dy[r * dim + i]
            }
            for i in 0 ..< dim {
                let xh = (Double(x[r * dim + i]) - m) * s
                let g = Double(dy[r * dim + i]) * Double(weight[i])
                dx[r * dim + i] += Float((g - sg / Double(dim) - xh * sgx / Double(dim)) * s)
            }
        }
    }

    public static func gelu(_ x: Float) -> Float {
        let v = Double(x)
        return Float(0.5 * v * (1 + erf(v / 2.0.squareRoot())))
    }

    public static func geluDerivative(_ x: Float) -> Float {
        let v = Double(x)
        let cdf = 0.5 * (1 + erf(v / 2.0.squareRoot()))
        let pdf = exp(-0.5 * v * v) / (2 * Double.pi).squareRoot()
        return Float(cdf + v * pdf)
    }

    public static func geluForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        for i in 0 ..< count { y[i] = gelu(x[i]) }
    }

    public static func geluBackward(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, count: Int) {
        for i in 0 ..< count { dx[i] += dy[i] * geluDerivative(x[i]) }
    }

    public static func softmaxForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, cols: Int, scale: Float = 1) {
        for r in 0 ..< rows {
            var m = -Double.infinity
            for j in 0 ..< cols { m = max(m, Double(scale) * Double(x[r * cols + j])) }
            var e = [Double](repeating: 0, count: cols)
            var s = 0.0
            for j in 0 ..< cols { e[j] = exp(Double(scale) * Double(x[r * cols + j]) - m); s += e[j] }
            for j in 0 ..< cols { y[r * cols + j] = Float(e[j] / s) }
        }
    }

    public static func softmaxBackward(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, y: UnsafePointer<Float>,
                                       rows: Int, cols: Int, scale: Float = 1) {
        for r in 0 ..< rows {
            var d = 0.0
            for j in 0 ..< cols { d += Double(dy[r * cols + j]) * Double(y[r * cols + j]) }
            for j in 0 ..< cols {
                dx[r * cols + j] += Float(Double(scale) * Double(y[r * cols + j]) * (Double(dy[r * cols + j]) - d))
            }
        }
    }

    /// Attention on the fused qkv tensor, loops only: out (B,N,D), probs (B,H,N,N).
    public static func attentionForward(out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>,
                                        qkv: UnsafePointer<Float>, batch: Int, tokens n: Int, heads: Int, headDim hd: Int) {
        let d = heads * hd, ld = 3 * d
        let scale = 1 / Double(hd).squareRoot()
        for b in 0 ..< batch {
            for h in 0 ..< heads {
                let p = probs + (b * heads + h) * n * n
                for i in 0 ..< n {
                    var row = [Double](repeating: 0, count: n)
                    for j in 0 ..< n {
                        var s = 0.0
                        for t in 0 ..< hd {
                            s += Double(qkv[(b * n + i) * ld + h * hd + t]) * Double(qkv[(b * n + j) * ld + d + h * hd + t])
                        }
                        row[j] = s * scale
                    }
                    let m = row.max()!
                    var z = 0.0
                    for j in 0 ..< n { row[j] = exp(row[j] - m); z += row[j] }
                    for j in 0 ..< n { p[i * n + j] = Float(row[j] / z) }
                    for t in 0 ..< hd {
                        var s = 0.0
                        for j in 0 ..< n { s += row[j] / z * Double(qkv[(b * n + j) * ld + 2 * d + h * hd + t]) }
                        out[(b * n + i) * d + h * hd + t] = Float(s)
                    }
                }
            }
        }
    }

    public static func attentionBackward(dqkv: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                         probs: UnsafePointer<Float>, qkv: UnsafePointer<Float>,
                                         batch: Int, tokens n: Int, heads: Int, headDim hd: Int) {
        let d = heads * hd, ld = 3 * d
        let scale = 1 / Double(hd).squareRoot()
        func q(_ b: Int, _ i: Int, _ h: Int, _ t: Int) -> Double { Double(qkv[(b * n + i) * ld + h * hd + t]) }
        func k(_ b: Int, _ i: Int, _ h: Int, _ t: Int) -> Double { Double(qkv[(b * n + i) * ld + d + h * hd + t]) }
        func v(_ b: Int, _ i: Int, _ h: Int, _ t: Int) -> Double { Double(qkv[(b * n + i) * ld + 2 * d + h * hd + t]) }
        for b in 0 ..< batch {
            for h in 0 ..< heads {
                let p = probs + (b * heads + h) * n * n
                for i in 0 ..< n {
                    var dp = [Double](repeating: 0, count: n)
                    for j in 0 ..< n {
                        for t in 0 ..< hd { dp[j] += Double(dout[(b * n + i) * d + h * hd + t]) * v(b, j, h, t) }
                    }
                    var dot = 0.0
                    for j in 0 ..< n { dot += dp[j] * Double(p[i * n + j]) }
                    for j in 0 ..< n {
                        let ds = Double(p[i * n + j]) * (dp[j] - dot) * scale
                        for t in 0 ..< hd {
                            dqkv[(b * n + i) * ld + h * hd + t] += Float(ds * k(b, j, h, t))
                            dqkv[(b * n + j) * ld + d + h * hd + t] += Float(ds * q(b, i, h, t))
                            dqkv[(b * n + j) * ld + 2 * d + h * hd + t] += Float(Double(p[i * n + j]) * Double(dout[(b * n + i) * d + h * hd + t]))
                        }
                    }
                }
            }
        }
    }

    public static func crossEntropyForward(probs: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
                                           rows: Int, classes: Int, smoothing: Float) -> Double {
        var total = 0.0
        for r in 0 ..< rows {
            var m = -Double.infinity
            for j in 0 ..< classes { m = max(m, Double(logits[r * classes + j])) }
            var z = 0.0
            for j in 0 ..< classes { z += exp(Double(logits[r * classes + j]) - m) }
            for j in 0 ..< classes {
                let logp = Double(logits[r * classes + j]) - m - log(z)
                probs[r * classes + j] = Float(exp(logp))
                let q = (j == Int(labels[r]) ? 1 - Double(smoothing) : 0) + Double(smoothing) / Double(classes)
                total -= q * logp
            }
        }
        return total
    }
}

extension Reference {
    /// The C library's erf and log in Double, for tests that need the truth.
    public static func erfDouble(_ x: Double) -> Double { erf(x) }
    public static func logDouble(_ x: Double) -> Double { log(x) }
}
