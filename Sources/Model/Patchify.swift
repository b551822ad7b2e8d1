import Kernels

/// Patch extraction for a conv with kernel = stride = p: image (C, H, W) → rows of
/// (C, p, p) values, one row per patch, patches row-major over the grid.
public enum Patchify {
    /// patches: (B, G·G, C·p·p) ← images: (B, C, H, W)
    public static func forward(_ patches: UnsafeMutablePointer<Float>, _ images: UnsafePointer<Float>,
                               batch: Int, channels: Int, imageSize s: Int, patchSize p: Int) {
        forEachPatchRun(batch: batch, channels: channels, imageSize: s, patchSize: p) { pixel, value in
            (patches + value).update(from: images + pixel, count: p)
        }
    }

    /// images: (B, C, H, W) += fold(patches: (B, G·G, C·p·p))
    public static func backward(_ images: UnsafeMutablePointer<Float>, _ patches: UnsafePointer<Float>,
                                batch: Int, channels: Int, imageSize s: Int, patchSize p: Int) {
        forEachPatchRun(batch: batch, channels: channels, imageSize: s, patchSize: p) { pixel, value in
            VectorOps.accumulate(images + pixel, patches + value, p)
        }
    }

    /// Calls body(pixel offset, patch-value offset) for every run of p contiguous pixels:
    /// the single place that defines how images map onto patch rows.
    @inline(__always)
    static func forEachPatchRun(batch: Int, channels: Int, imageSize s: Int, patchSize p: Int,
                                _ body: (_ pixel: Int, _ value: Int) -> Void) {
        let g = s / p, k = channels * p * p
        for b in 0 ..< batch {
            for gy in 0 ..< g {
                for gx in 0 ..< g {
                    let row = (b * g * g + gy * g + gx) * k
                    for ch in 0 ..< channels {
                        for ky in 0 ..< p {
                            body(b * channels * s * s + ch * s * s + (gy * p + ky) * s + gx * p, row + (ch * p + ky) * p)
                        }
                    }
                }
            }
        }
    }
}

public enum Metrics {
    /// How many rows' arg-max (first on ties) equals the label.
    public static func correct(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, rows: Int, classes: Int) -> Int {
        var n = 0
        for r in 0 ..< rows {
            let l = logits + r * classes
            var best = 0
            for j in 1 ..< max(classes, 1) where l[j] > l[best] { best = j }
            if best == Int(labels[r]) { n += 1 }
        }
        return n
    }
}
