import ArgumentParser
import Foundation
import Plot
import Training

struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Draw training curves of one or more runs: loss, accuracy, learning rate, density, bytes per step.",
        discussion: """
        Reads each run's metrics.jsonl and writes one chart per quantity, every run a line \
        of its own (labelled by its directory name), against steps or wall time: \
        loss, accuracy (test, and train as dashed lines), lr, density (sparse runs), \
        bytes (per step, up and dashed down in MiB or KiB; runs through workers) and \
        throughput, each as PNG and SVG.

        Examples:
          svite plot runs/default
          svite plot runs/dense runs/svite-50 --out figures --x time
        """
    )

    @Argument(help: ArgumentHelp("Run directories (or metrics.jsonl files).", valueName: "run"))
    var runs: [String]

    @Option(name: .long, help: ArgumentHelp("Directory for the charts (default: plots/ in the first run).", valueName: "dir"))
    var out: String?

    @Option(name: .long, help: "The x axis: step or time (wall time since the run began).")
    var x: Axis = .step

    @Option(name: .long, help: "png, svg or both.")
    var format: Formats = .both

    @Flag(name: .long, help: "Also write each run's curves as RUN.csv (one row per step: step, seconds, then each quantity).")
    var csv = false

    enum Axis: String, ExpressibleByArgument, CaseIterable { case step, time }
    enum Formats: String, ExpressibleByArgument, CaseIterable { case png, svg, both }

    func validate() throws {
        if runs.isEmpty { throw ValidationError("name at least one run directory") }
    }

    func run() throws {
        let curves: [TrainingCurves]
        do { curves = try runs.map { try TrainingCurves.load($0) } } catch let e as CurvesError { throw CommandFailure(e.message) }
        let dir = out ?? "\(runs[0])/plots"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw CommandFailure("cannot make \(dir): \(error.localizedDescription)")
        }
        let xLabel = x == .step ? "step" : "wall time (minutes)"
        func points(_ p: [TrainingCurves.Point]) -> [(x: Double, y: Double)] {
            p.map { (x: x == .step ? $0.step : $0.seconds / 60, y: $0.value) }
        }
        func series(_ kp: KeyPath<TrainingCurves, [TrainingCurves.Point]>, suffix: String = "", dashed: Bool = false,
                    colour: (Int) -> Int = { $0 }, scale: Double = 1) -> [LineChart.Series] {
            curves.enumerated().compactMap { k, c in
                let p = c[keyPath: kp]
                return p.isEmpty ? nil : LineChart.Series(name: c.name + suffix, points: points(p).map { ($0.x, $0.y / scale) },
                                                          dashed: dashed, colour: colour(k))
            }
        }
        var charts: [(String, LineChart)] = [
            ("loss", LineChart(title: "Training loss", xLabel: xLabel, yLabel: "loss (label-smoothed)", series: series(\.loss), logY: true)),
            ("accuracy", LineChart(title: "Top-1 accuracy", xLabel: xLabel, yLabel: "top-1 (%)",
                                   series: series(\.evalAccuracy, suffix: " test") + series(\.trainAccuracy, suffix: " train", dashed: true))),
            ("lr", LineChart(title: "Learning rate", xLabel: xLabel, yLabel: "learning rate", series: series(\.lr))),
            ("throughput", LineChart(title: "Training throughput", xLabel: xLabel, yLabel: "images per second", series: series(\.imagesPerSecond))),
        ]
        if curves.contains(where: { !$0.density.isEmpty }) {
            charts.append(("density", LineChart(title: "Density of the prunable weights", xLabel: xLabel, yLabel: "density (fraction active)",
                                                series: series(\.density))))
        }
        if curves.contains(where: { !$0.bytesUp.isEmpty }) {
            // On a linear axis in the unit the end-of-run summary uses; up and down in
            // colours of their own (and down dashed), each run its own pair.
            let most = curves.flatMap { $0.bytesUp + $0.bytesDown }.map(\.value).max() ?? 0
            let (unit, scale) = most >= 1_048_576 ? ("MiB", 1_048_576.0) : ("KiB", 1024.0)
            charts.append(("bytes", LineChart(title: "Bytes per step through the coordinator", xLabel: xLabel, yLabel: "\(unit) per step",
                                              series: series(\.bytesUp, suffix: " up", colour: { 2 * $0 }, scale: scale)
                                                  + series(\.bytesDown, suffix: " down", dashed: true, colour: { 2 * $0 + 1 }, scale: scale))))
        }
        let formats: [LineChart.Format] = format == .both ? [.png, .svg] : [format == .png ? .png : .svg]
        var written: [String] = []
        for (name, chart) in charts {
            for f in formats {
                let path = "\(dir)/\(name).\(f.rawValue)"
                do { try chart.write(to: path, format: f) } catch { throw CommandFailure("\(path): \(error)") }
                written.append(path)
            }
        }
        if csv {
            for c in curves {
                let path = "\(dir)/\(c.name).csv"
                do { try c.csv.write(toFile: path, atomically: true, encoding: .utf8) } catch { throw CommandFailure("\(path): \(error.localizedDescription)") }
            }
        }
        print("\(written.count) charts of \(curves.count) run(s) in \(dir): " + charts.map(\.0).joined(separator: ", ")
            + (csv ? "; " + curves.map { "\($0.name).csv" }.joined(separator: ", ") : ""))
    }
}
