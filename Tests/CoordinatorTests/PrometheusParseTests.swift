import Foundation
import Testing
import TestSupport
@testable import Coordinator
import Monitoring

/// The exposition read by a real parser (the Prometheus project's Python client, Debian's
/// python3-prometheus-client, which deploy/setup.sh installs): running totals are counters
/// named _total, the rest gauges, the CURVE refusals are there, and every metric family is
/// named in docs/monitoring.md.
@Suite("prometheus exposition")
struct PrometheusParseTests {
    @Test func aRealParserReadsCountersAndGauges() throws {
        let python = "/usr/bin/python3"
        let json = """
        {"run_id": "ab12", "config": "tiny", "state": "waiting", "workers_connected": 1, "workers_needed": 2, "step": 7, "total_steps": 40,
         "bad_frames": 3, "window": {"step": 7, "total_steps": 40, "epoch": 0.5, "loss": 1.5, "train_accuracy": 0.5, "lr": 0.001,
                                     "grad_norm": 1, "images_per_second": 100, "elapsed_seconds": 12.5, "eta_seconds": 50,
                                     "bytes_up_per_step": 0, "bytes_down_per_step": 0},
         "curve": {"authorized_keys": ["w1", "w2"], "admitted": 4, "refused_keys": 2, "refused_handshakes": 5, "status_socket_curve": true},
         "workers": [{"id": "w1", "rank": 0, "host": "h1", "pid": 9, "threads": 2, "state": "ready", "seconds_since_heard": 0.3,
                      "steps_done": 7, "refused": 1, "joins": 2, "share": 64, "images_per_second": 250, "bytes_up": 1000, "bytes_down": 2000}]}
        """
        let text = PrometheusText.render(try StatusDocument.decode(Data(json.utf8)))
        let script = """
        import json, sys
        from prometheus_client.parser import text_string_to_metric_families
        out = [{"name": f.name, "type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
               for f in text_string_to_metric_families(sys.stdin.read())]
        print(json.dumps(out))
        """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = ["-c", script]
        let input = Pipe(), output = Pipe(), errors = Pipe()
        p.standardInput = input; p.standardOutput = output; p.standardError = errors
        try p.run()
        input.fileHandleForWriting.write(Data(text.utf8))
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let err = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        try #require(p.terminationStatus == 0, "the parser refused the exposition or is missing (bash deploy/setup.sh installs python3-prometheus-client): \(err)\n\(text)")
        let families = try #require(JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        var types: [String: String] = [:], samples: [String: Double] = [:]
        for f in families {
            types[f["name"] as! String] = f["type"] as? String
            for s in f["samples"] as! [[Any]] {
                let labels = (s[1] as! [String: String]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
                samples["\(s[0] as! String){\(labels)}"] = (s[2] as! NSNumber).doubleValue
            }
        }
        // The client names a counter's family without _total and its sample with it.
        for counter in ["svite_bad_frames", "svite_worker_steps", "svite_worker_refused", "svite_worker_joins",
                        "svite_worker_up_bytes", "svite_worker_down_bytes", "svite_curve_admitted", "svite_curve_refused"] {
            #expect(types[counter] == "counter", "\(counter): \(types[counter] ?? "absent")")
        }
        for (name, type) in types where type == "gauge" { #expect(!name.hasSuffix("_total"), "gauge \(name) is named as a counter") }
        #expect(samples["svite_bad_frames_total{}"] == 3)
        #expect(samples["svite_curve_refused_total{reason=key not listed}"] == 2)
        #expect(samples["svite_curve_refused_total{reason=handshake (plaintext or wrong coordinator key)}"] == 5)
        #expect(samples["svite_worker_up_bytes_total{host=h1,rank=0,worker=w1}"] == 1000)
        #expect(samples["svite_workers_needed{}"] == 2)
        #expect(samples["svite_info{config=tiny,run=ab12,state=waiting}"] == 1, "\(samples.keys.sorted())")
        let doc = try String(contentsOfFile: "\(repoRoot)/docs/monitoring.md", encoding: .utf8)
        for (name, type) in types {
            let shown = type == "counter" ? name + "_total" : name
            #expect(doc.contains("`\(shown)"), "docs/monitoring.md does not name \(shown)")
        }
    }
}
