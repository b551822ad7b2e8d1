import Benchmarks
import Plot

/// The pictures of the sparse benchmarks: speed-up over dense against sparsity, with the
/// break-even line, as PNG or SVG by the file's extension.
enum BenchPlots {
    /// By the file's extension; nil for another.
    static func format(_ path: String) -> LineChart.Format? {
        path.hasSuffix(".png") ? .png : path.hasSuffix(".svg") ? .svg : nil
    }

    static func write(_ chart: LineChart, to path: String) throws {
        guard let f = format(path) else { throw CommandFailure("--plot \(path): name a .png or .svg file") }
        try chart.write(to: path, format: f)
    }

    static func breakEven(_ sparsities: [Double]) -> LineChart.Series {
        LineChart.Series(name: "break-even", points: [(sparsities.min() ?? 0, 1), (sparsities.max() ?? 100, 1)], dashed: true, colour: 7)
    }

    /// One line per layer kind: the row-major sparse kernels against dense forward + backward.
    static func layers(_ r: SparseLinearBenchmark.Result, to path: String) throws {
        let kinds = r.rows.map(\.layer).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let series = kinds.map { k in
            LineChart.Series(name: k, points: r.rows.filter { $0.layer == k }.map { (100 * (1 - $0.density), $0.rowsSpeedup) }.sorted { $0.x < $1.x })
        }
        let x = r.rows.map { 100 * (1 - $0.density) }
        let chart = LineChart(title: "\(r.config), one lane of \(r.laneBatch)", xLabel: "sparsity (%)",
                              yLabel: "forward + backward speed-up", series: series + [breakEven(x)])
        try write(chart, to: path)
    }

    /// The train step and inference of SViTE's ERK masks against dense products.
    static func model(_ r: ModelBenchmark.Result, to path: String) throws {
        let x = r.unstructured.map { 100 * $0.sparsity }
        let series = [
            LineChart.Series(name: "train step", points: r.unstructured.map { (100 * $0.sparsity, $0.trainSpeedup) }),
            LineChart.Series(name: "inference", points: r.unstructured.map { (100 * $0.sparsity, $0.forwardSpeedup) }),
        ]
        let chart = LineChart(title: "\(r.config) b\(r.batch), \(r.threads) threads, \(r.precision.rawValue)", xLabel: "sparsity (%)",
                              yLabel: "speed-up over dense", series: series + [breakEven(x)])
        try write(chart, to: path)
    }
}
