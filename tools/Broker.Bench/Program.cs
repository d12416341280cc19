using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using Broker.Bench;
using MQTTnet;
using MQTTnet.Protocol;

BenchOptions o;
try
{
    o = BenchOptions.Parse(args);
}
catch (HelpRequestedException)
{
    Console.WriteLine(BenchOptions.Usage);
    return 0;
}
catch (Exception ex) when (ex is ArgumentException or FormatException or OverflowException)
{
    Console.Error.WriteLine(ex.Message);
    Console.Error.WriteLine(BenchOptions.Usage);
    return 2;
}

// Loopback only: this tool generates load and must never be pointed at someone else's broker.
if (!IPAddress.TryParse(o.Host, out var address) || !IPAddress.IsLoopback(address))
{
    Console.Error.WriteLine($"--host must be a loopback address (was {o.Host})");
    return 2;
}

if (o.From.Length > 0 && (!IPAddress.TryParse(o.From, out var from) || !IPAddress.IsLoopback(from)))
{
    Console.Error.WriteLine($"--from must be a loopback address (was {o.From})");
    return 2;
}

ThreadPool.GetMinThreads(out var workers, out var io);
ThreadPool.SetMinThreads(Math.Max(workers, 16), io);

try
{
    var result = o.Scenario switch
    {
        "connect" => await Scenarios.ConnectAsync(o),
        "guess" => await Scenarios.GuessAsync(o),
        "park" => await Scenarios.ParkAsync(o),
        "fill" => await Scenarios.FillAsync(o),
        _ => await Scenarios.MessagesAsync(o),
    };
    result.Print(o);
    return result.Ok ? 0 : 1;
}
catch (Exception ex)
{
    Console.Error.WriteLine($"bench failed: {ex.GetType().Name}: {ex.Message}");
    return 1;
}

namespace Broker.Bench
{
    internal static class Scenarios
    {
        static double Seconds(long ticks) => ticks / (double)Stopwatch.Frequency;

        static long Ticks(double seconds) => (long)(seconds * Stopwatch.Frequency);

        /// <summary>fanin, p2p and group: connect, subscribe, publish for warmup + duration, drain, report.</summary>
        public static async Task<Result> MessagesAsync(BenchOptions o)
        {
            var run = Random.Shared.NextInt64(1, long.MaxValue);
            var probe = new ProcessProbe(o.BrokerPids);
            var m = new Measurements(20_000_000);
            var receivers = new List<IMqttClient>();
            var publishers = new List<Publisher>();
            var receiverIds = new List<(string ClientId, string User)>();
            var qos = o.Qos;
            int fanout;

            switch (o.Scenario)
            {
                case "fanin":
                {
                    // N publishers, each to another user's inbox (last level = its own user id); one service subscriber reads them all.
                    var id = o.ClientId("sub", 0);
                    var sub = await Clients.ConnectReceiverAsync(o, id, o.ServiceUser, m, run);
                    await Clients.SubscribeAsync(sub, $"{o.Parent}/+/Inbox/#", qos);
                    receivers.Add(sub);
                    receiverIds.Add((id, o.ServiceUser));
                    await ParallelConnect(o.Clients, async i =>
                    {
                        var user = o.User(i);
                        var c = await Clients.ConnectAsync(o, o.ClientId("pub", i), user, true, null, run);
                        return new Publisher(c, $"{o.Parent}/{o.User(i + 1)}/Inbox/Msg/{user}", o, m, run);
                    }, publishers);
                    fanout = 1;
                    break;
                }

                case "p2p":
                {
                    // N pairs; receiver i gets IMS/p2p/<its client id> without subscribing (plain brokers: it subscribes).
                    var rx = new IMqttClient[o.Clients];
                    await Parallel.ForEachAsync(Enumerable.Range(0, o.Clients), new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (i, _) =>
                    {
                        var id = o.ClientId("rcv", i);
                        var c = await Clients.ConnectReceiverAsync(o, id, o.User(i + 1), m, run);
                        if (o.Mosquitto)
                        {
                            await Clients.SubscribeAsync(c, $"{o.Parent}/p2p/{id}", qos);
                        }

                        rx[i] = c;
                    });
                    receivers.AddRange(rx);
                    for (var i = 0; i < o.Clients; i++)
                    {
                        receiverIds.Add((o.ClientId("rcv", i), o.User(i + 1)));
                    }

                    await ParallelConnect(o.Clients, async i =>
                    {
                        var c = await Clients.ConnectAsync(o, o.ClientId("snd", i), o.User(i), true, null, run);
                        return new Publisher(c, $"{o.Parent}/p2p/{o.ClientId("rcv", i)}", o, m, run);
                    }, publishers);
                    fanout = 1;
                    break;
                }

                default: // group
                {
                    // N members read IMS/<group>/#; one member publishes to IMS/<group>/<own user id>.
                    var rx = new IMqttClient[o.Clients];
                    await Parallel.ForEachAsync(Enumerable.Range(0, o.Clients), new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (i, _) =>
                    {
                        var id = o.ClientId("mem", i);
                        var c = await Clients.ConnectReceiverAsync(o, id, o.User(i), m, run);
                        await Clients.SubscribeAsync(c, $"{o.Parent}/{o.Group}/#", qos);
                        rx[i] = c;
                    });
                    receivers.AddRange(rx);
                    for (var i = 0; i < o.Clients; i++)
                    {
                        receiverIds.Add((o.ClientId("mem", i), o.User(i)));
                    }

                    var user = o.User(0);
                    var pc = await Clients.ConnectAsync(o, o.ClientId("gpub", 0), user, true, null, run);
                    publishers.Add(new Publisher(pc, $"{o.Parent}/{o.Group}/{user}", o, m, run));
                    fanout = o.Clients;
                    break;
                }
            }

            await Task.Delay(300);
            var start = Stopwatch.GetTimestamp();
            m.WindowStart = start + Ticks(o.Warmup);
            m.WindowEnd = m.WindowStart + Ticks(o.Duration);
            var sampler = SampleAsync(probe, m.WindowStart, m.WindowEnd);

            if (o.Rate > 0)
            {
                // One pacing loop: every millisecond, send what is due, round-robin over the publishers.
                long due = 0;
                while (true)
                {
                    var now = Stopwatch.GetTimestamp();
                    if (now >= m.WindowEnd)
                    {
                        break;
                    }

                    var target = (long)(Seconds(now - start) * o.Rate);
                    for (; due < target; due++)
                    {
                        publishers[(int)(due % publishers.Count)].TryPublish();
                    }

                    await Task.Delay(1);
                }
            }
            else
            {
                await Task.WhenAll(publishers.Select(p => Task.Run(() => p.RunSaturatedAsync(m.WindowEnd))));
            }

            var (cpu, rss, cpuEach) = await sampler;
            await Task.WhenAll(publishers.Select(p => p.DrainAsync()));

            // Drain: wait until deliveries stop (at most 5 s).
            var expected = qos == MqttQualityOfServiceLevel.AtMostOnce ? m.Sent * fanout : m.Acked * fanout;
            var last = -1L;
            var deadline = Stopwatch.GetTimestamp() + Ticks(5);
            while (Stopwatch.GetTimestamp() < deadline && m.Received < expected)
            {
                var before = m.AllReceived;
                await Task.Delay(500);
                if (m.AllReceived == before && before == last)
                {
                    break;
                }

                last = m.AllReceived;
            }

            var (p50, p99, max) = m.Percentiles();
            var result = new Result
            {
                Scenario = o.Scenario,
                Qos = (int)qos,
                Clients = o.Clients,
                Rate = o.Rate,
                Duration = o.Duration,
                Payload = o.Payload,
                Published = m.Sent,
                Acked = m.Acked,
                Failed = m.Failed,
                Behind = m.Skipped,
                Received = m.Received,
                Expected = expected,
                PublishRate = m.Sent / o.Duration,
                MsgsPerSecond = m.DeliveredInWindow / o.Duration,
                P50 = p50,
                P99 = p99,
                Max = max,
                CpuPercent = cpu,
                CpuEach = cpuEach,
                RssKiB = rss,
            };

            // Lost = acknowledged (QoS 1/2) deliveries that never arrived; QoS 0 may drop by design.
            result.Lost = qos == MqttQualityOfServiceLevel.AtMostOnce ? 0 : Math.Max(0, expected - m.Received);
            result.Ok = result.Received > 0;

            await Task.WhenAll(publishers.Select(p => QuietDisconnect(p.Client)));
            await Task.WhenAll(receivers.Select(QuietDisconnect));
            if (!o.CleanSession)
            {
                // Leave no persistent sessions behind.
                await Parallel.ForEachAsync(receiverIds, new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (r, _) =>
                {
                    try
                    {
                        await Clients.ClearSessionAsync(o, r.ClientId, r.User);
                    }
                    catch (Exception)
                    {
                    }
                });
            }

            return result;
        }

        /// <summary>connect: N idle authenticated connections at a rate; conns/s and broker RSS per connection.</summary>
        public static async Task<Result> ConnectAsync(BenchOptions o)
        {
            var probe = new ProcessProbe(o.BrokerPids);
            await Task.Delay(1000);
            var baseline = probe.RssKiB();
            var cpu0 = probe.CpuSeconds();
            var m = new Measurements(o.Clients);
            var clients = new IMqttClient?[o.Clients];
            var failures = 0;
            string? firstError = null;
            using var gate = new SemaphoreSlim(256);
            var tasks = new List<Task>(o.Clients);
            var start = Stopwatch.GetTimestamp();
            for (var i = 0; i < o.Clients; i++)
            {
                if (o.Rate > 0)
                {
                    var at = start + Ticks(i / o.Rate);
                    var wait = Seconds(at - Stopwatch.GetTimestamp());
                    if (wait > 0.002)
                    {
                        await Task.Delay(TimeSpan.FromSeconds(wait));
                    }
                }

                await gate.WaitAsync();
                var n = i;
                tasks.Add(Task.Run(async () =>
                {
                    var t0 = Stopwatch.GetTimestamp();
                    try
                    {
                        clients[n] = await Clients.ConnectAsync(o, o.ClientId("idle", n), o.User(n), true, null, 0);
                        m.AddLatency((Stopwatch.GetTimestamp() - t0) * 1_000_000 / Stopwatch.Frequency);
                    }
                    catch (Exception ex)
                    {
                        if (Interlocked.Increment(ref failures) == 1)
                        {
                            firstError = ex.Message;
                        }
                    }
                    finally
                    {
                        gate.Release();
                    }
                }));
            }

            await Task.WhenAll(tasks);
            var elapsed = Seconds(Stopwatch.GetTimestamp() - start);
            var cpu1 = probe.CpuSeconds();
            // Let the broker settle (GC, pools), hold the connections idle, then read its RSS.
            await Task.Delay(TimeSpan.FromSeconds(Math.Min(o.Duration, 30)));
            GC.KeepAlive(clients);
            var rss = probe.RssKiB();
            var open = clients.Count(c => c is { IsConnected: true });
            var (p50, p99, max) = m.Percentiles();
            var result = new Result
            {
                Scenario = "connect",
                Qos = 0,
                Clients = o.Clients,
                Rate = o.Rate,
                Duration = elapsed,
                Published = o.Clients - failures,
                Failed = failures,
                Received = open,
                MsgsPerSecond = (o.Clients - failures) / elapsed,
                P50 = p50,
                P99 = p99,
                Max = max,
                CpuPercent = probe.Enabled ? (cpu1 - cpu0) / elapsed * 100 : double.NaN,
                RssKiB = rss,
                BaselineRssKiB = baseline,
                BytesPerConnection = probe.Enabled && open > 0 ? (rss - baseline) * 1024.0 / open : double.NaN,
                Error = firstError,
                Ok = failures == 0 && open == o.Clients,
            };

            await Parallel.ForEachAsync(clients, new ParallelOptions { MaxDegreeOfParallelism = 64 }, async (c, _) =>
            {
                if (c is not null)
                {
                    await QuietDisconnect(c);
                    c.Dispose();
                }
            });
            return result;
        }

        /// <summary>
        /// guess: --clients loops, each CONNECTs with --password as the first user, waits for the refusal and
        /// goes again, for --duration seconds. Reports refusals per second (msgs/s) and the broker's CPU.
        /// </summary>
        public static async Task<Result> GuessAsync(BenchOptions o)
        {
            var probe = new ProcessProbe(o.BrokerPids);
            var m = new Measurements(1_000_000);
            var refused = 0;
            var accepted = 0;
            var cpu0 = probe.CpuSeconds();
            var start = Stopwatch.GetTimestamp();
            var end = start + Ticks(o.Duration);
            await Task.WhenAll(Enumerable.Range(0, o.Clients).Select(n => Task.Run(async () =>
            {
                while (Stopwatch.GetTimestamp() < end)
                {
                    var t0 = Stopwatch.GetTimestamp();
                    try
                    {
                        using var c = await Clients.ConnectAsync(o, o.ClientId("guess", n), o.User(0), true, null, 0);
                        Interlocked.Increment(ref accepted);
                        await QuietDisconnect(c);
                    }
                    catch (Exception)
                    {
                        Interlocked.Increment(ref refused);
                        m.AddLatency((Stopwatch.GetTimestamp() - t0) * 1_000_000 / Stopwatch.Frequency);
                    }
                }
            })));
            var elapsed = Seconds(Stopwatch.GetTimestamp() - start);
            var cpu1 = probe.CpuSeconds();
            var (p50, p99, max) = m.Percentiles();
            return new Result
            {
                Scenario = "guess",
                Qos = 0,
                Clients = o.Clients,
                Rate = 0,
                Duration = elapsed,
                Published = refused + accepted,
                Failed = accepted,
                Received = refused,
                MsgsPerSecond = refused / elapsed,
                P50 = p50,
                P99 = p99,
                Max = max,
                CpuPercent = probe.Enabled ? (cpu1 - cpu0) / elapsed * 100 : double.NaN,
                RssKiB = probe.RssKiB(),
                BaselineRssKiB = 0,
                BytesPerConnection = double.NaN,
                Ok = accepted == 0,
            };
        }

        /// <summary>The topic a parked session reads (its filter with <c>#</c>), and the filter itself.</summary>
        static (string Topic, string Filter) ParkedTopic(BenchOptions o, int i) => o.Mosquitto
            ? ($"{o.Parent}/{o.ClientId("park", i)}/Inbox/m", $"{o.Parent}/{o.ClientId("park", i)}/Inbox/#")
            : ($"{o.Parent}/{o.User(i)}/Inbox/Msg/{o.User(i + 1)}", $"{o.Parent}/{o.User(i)}/Inbox/#");

        /// <summary>park: --clients persistent sessions on --sub-port, each subscribed at QoS 1 to its own topic, then disconnected.</summary>
        public static async Task<Result> ParkAsync(BenchOptions o)
        {
            var failures = 0;
            string? firstError = null;
            var start = Stopwatch.GetTimestamp();
            await Parallel.ForEachAsync(Enumerable.Range(0, o.Clients), new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (i, ct) =>
            {
                try
                {
                    using var c = await Clients.ConnectAsync(o, o.ClientId("park", i), o.User(i), clean: false, sink: null, run: 0, port: o.SubPort);
                    await Clients.SubscribeAsync(c, ParkedTopic(o, i).Filter, MqttQualityOfServiceLevel.AtLeastOnce);
                    await c.DisconnectAsync(cancellationToken: ct);
                }
                catch (Exception ex)
                {
                    if (Interlocked.Increment(ref failures) == 1)
                    {
                        firstError = ex.Message;
                    }
                }
            });
            var elapsed = Seconds(Stopwatch.GetTimestamp() - start);
            return new Result
            {
                Scenario = "park",
                Clients = o.Clients,
                Duration = elapsed,
                Published = o.Clients - failures,
                Failed = failures,
                MsgsPerSecond = (o.Clients - failures) / elapsed,
                P50 = double.NaN,
                P99 = double.NaN,
                Max = double.NaN,
                CpuPercent = double.NaN,
                Error = firstError,
                Ok = failures == 0,
            };
        }

        /// <summary>fill: --messages QoS 1 publishes on --port, round robin to the parked sessions' topics; waits for every PUBACK.</summary>
        public static async Task<Result> FillAsync(BenchOptions o)
        {
            var senders = Math.Min(10, o.Clients);
            var clients = new IMqttClient[senders];
            for (var s = 0; s < senders; s++)
            {
                clients[s] = await Clients.ConnectAsync(o, o.ClientId("fill", s), o.User(s), clean: true, sink: null, run: 0);
            }

            var acked = 0L;
            var failed = 0L;
            // One window per sender: an MQTT 5 client with more unacknowledged publishes than the broker's Receive Maximum is disconnected.
            var windows = Enumerable.Range(0, senders).Select(_ => new SemaphoreSlim(o.Window, o.Window)).ToArray();
            var tasks = new List<Task>(o.Messages);
            var start = Stopwatch.GetTimestamp();
            for (var n = 0; n < o.Messages; n++)
            {
                var window = windows[n % senders];
                await window.WaitAsync();
                var payload = new byte[o.Payload];
                Random.Shared.NextBytes(payload);
                var message = new MqttApplicationMessage
                {
                    Topic = ParkedTopic(o, n % o.Clients).Topic,
                    Payload = new System.Buffers.ReadOnlySequence<byte>(payload),
                    QualityOfServiceLevel = MqttQualityOfServiceLevel.AtLeastOnce,
                };
                var client = clients[n % senders];
                tasks.Add(Task.Run(async () =>
                {
                    try
                    {
                        var r = await client.PublishAsync(message);
                        if (r.IsSuccess)
                        {
                            Interlocked.Increment(ref acked);
                        }
                        else
                        {
                            Interlocked.Increment(ref failed);
                        }
                    }
                    catch (Exception)
                    {
                        Interlocked.Increment(ref failed);
                    }
                    finally
                    {
                        window.Release();
                    }
                }));
            }

            await Task.WhenAll(tasks);
            var elapsed = Seconds(Stopwatch.GetTimestamp() - start);
            await Task.WhenAll(clients.Select(QuietDisconnect));
            return new Result
            {
                Scenario = "fill",
                Qos = 1,
                Clients = o.Clients,
                Duration = elapsed,
                Payload = o.Payload,
                Published = o.Messages,
                Acked = acked,
                Failed = failed,
                PublishRate = o.Messages / elapsed,
                MsgsPerSecond = acked / elapsed,
                P50 = double.NaN,
                P99 = double.NaN,
                Max = double.NaN,
                CpuPercent = double.NaN,
                Ok = failed == 0 && acked == o.Messages,
            };
        }

        static async Task ParallelConnect(int count, Func<int, Task<Publisher>> connect, List<Publisher> into)
        {
            var made = new Publisher[count];
            await Parallel.ForEachAsync(Enumerable.Range(0, count), new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (i, _) => made[i] = await connect(i));
            into.AddRange(made);
        }

        /// <summary>Broker CPU % (utime + stime over the window, divided by its length) and RSS at its end.</summary>
        /// <summary>With several processes (<c>--broker-pid a,b,c</c>): the sum, and each one's CPU % in <c>CpuEach</c>.</summary>
        static async Task<(double Cpu, long Rss, double[] CpuEach)> SampleAsync(ProcessProbe probe, long from, long to)
        {
            if (!probe.Enabled)
            {
                return (double.NaN, -1, []);
            }

            await Task.Delay(TimeSpan.FromSeconds(Math.Max(0, Seconds(from - Stopwatch.GetTimestamp()))));
            var c0 = probe.CpuSecondsEach();
            var t0 = Stopwatch.GetTimestamp();
            await Task.Delay(TimeSpan.FromSeconds(Math.Max(0, Seconds(to - Stopwatch.GetTimestamp()))));
            var c1 = probe.CpuSecondsEach();
            var t1 = Stopwatch.GetTimestamp();
            var each = c1.Zip(c0, (a, b) => (a - b) / Seconds(t1 - t0) * 100).ToArray();
            return (each.Sum(), probe.RssKiB(), each);
        }

        static async Task QuietDisconnect(IMqttClient client)
        {
            try
            {
                if (client.IsConnected)
                {
                    await client.DisconnectAsync();
                }
            }
            catch (Exception)
            {
            }
        }
    }

    internal sealed class Result
    {
        public string Scenario = "";
        public int Qos;
        public int Clients;
        public double Rate;
        public double Duration;
        public int Payload;
        public long Published;
        public long Acked;
        public long Failed;
        public long Behind;
        public long Received;
        public long Expected;
        public long Lost;
        public double PublishRate;
        public double MsgsPerSecond;
        public double P50;
        public double P99;
        public double Max;
        public double CpuPercent;
        public double[] CpuEach = [];
        public long RssKiB = -1;
        public long BaselineRssKiB = -1;
        public double BytesPerConnection = double.NaN;
        public string? Error;
        public bool Ok;

        static string F(double v, string format = "0.###") => double.IsNaN(v) ? "null" : v.ToString(format, CultureInfo.InvariantCulture);

        public void Print(BenchOptions o)
        {
            var mode = Rate > 0 ? $"fixed rate {Rate:0} /s" : "saturation";
            if (Scenario == "connect")
            {
                Console.WriteLine($"connect: {Published}/{Clients} connections in {Duration:0.00} s = {MsgsPerSecond:0} conns/s ({mode}); connect latency p50 {F(P50, "0.00")} ms p99 {F(P99, "0.00")} ms max {F(Max, "0.00")} ms; still open {Received}");
                if (RssKiB >= 0)
                {
                    Console.WriteLine($"broker: RSS {BaselineRssKiB} KiB before, {RssKiB} KiB with the connections = {F(BytesPerConnection, "0")} bytes per connection; CPU {F(CpuPercent, "0.0")} % while connecting");
                }

                if (Error is not null)
                {
                    Console.WriteLine($"failures: {Failed}, first: {Error}");
                }
            }
            else
            {
                Console.WriteLine($"{Scenario} qos {Qos}, {Clients} clients, {Payload} B, {mode}, {Duration:0} s measured");
                Console.WriteLine($"  published {Published} ({PublishRate:0} /s), acked {Acked}, failed {Failed}, not sent (window full) {Behind}");
                Console.WriteLine($"  delivered {MsgsPerSecond:0} msgs/s; of the window's messages {Received}/{Expected} arrived, lost (acked, never arrived) {Lost}");
                Console.WriteLine($"  latency p50 {F(P50, "0.000")} ms, p99 {F(P99, "0.000")} ms, max {F(Max, "0.000")} ms");
                if (!double.IsNaN(CpuPercent))
                {
                    var perMsg = MsgsPerSecond > 0 ? CpuPercent / 100 / MsgsPerSecond * 1e6 : double.NaN;
                    Console.WriteLine($"  broker CPU {CpuPercent:0.0} % ({F(perMsg, "0.0")} µs per delivered message), RSS {RssKiB} KiB");
                }
            }

            var json = new StringBuilder("{");
            void Add(string key, string value, bool quote = false) =>
                json.Append(json.Length > 1 ? "," : "").Append('"').Append(key).Append("\":").Append(quote ? "\"" + value.Replace("\"", "'") + "\"" : value);
            Add("scenario", Scenario, true);
            Add("label", o.Label, true);
            Add("broker", o.Mosquitto ? "mosquitto" : "ims", true);
            Add("qos", Qos.ToString(CultureInfo.InvariantCulture));
            Add("clients", Clients.ToString(CultureInfo.InvariantCulture));
            Add("rate", F(Rate));
            Add("duration", F(Duration));
            Add("payload", Payload.ToString(CultureInfo.InvariantCulture));
            Add("published", Published.ToString(CultureInfo.InvariantCulture));
            Add("acked", Acked.ToString(CultureInfo.InvariantCulture));
            Add("failed", Failed.ToString(CultureInfo.InvariantCulture));
            Add("behind", Behind.ToString(CultureInfo.InvariantCulture));
            Add("received", Received.ToString(CultureInfo.InvariantCulture));
            Add("expected", Expected.ToString(CultureInfo.InvariantCulture));
            Add("lost", Lost.ToString(CultureInfo.InvariantCulture));
            Add("msgs_per_s", F(MsgsPerSecond, "0.0"));
            Add("p50_ms", F(P50));
            Add("p99_ms", F(P99));
            Add("max_ms", F(Max));
            Add("cpu_pct", F(CpuPercent, "0.00"));
            if (CpuEach.Length > 1)
            {
                Add("cpu_pct_each", "[" + string.Join(",", CpuEach.Select(c => F(c, "0.00"))) + "]");
            }
            Add("rss_kib", RssKiB.ToString(CultureInfo.InvariantCulture));
            if (Scenario == "connect")
            {
                Add("baseline_rss_kib", BaselineRssKiB.ToString(CultureInfo.InvariantCulture));
                Add("bytes_per_conn", F(BytesPerConnection, "0"));
            }

            Add("ok", Ok ? "true" : "false");
            Console.WriteLine(json.Append('}').ToString());
        }
    }
}
