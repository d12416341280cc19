using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using Broker.Bench;
using StackExchange.Redis;

// The floor under a cross-node message (issue 13): what Redis and its two clients cost when they do only
// what a durable cross-node QoS 1 delivery cannot do without, with no broker on top:
//   pub (node 1's part): one script per message writes the row (HINCRBY seq, ZADD queue, HSET row) and
//       SPUBLISHes the message to the receiving node, in the same call, as RedisScripts.Direct does; the
//       reply is the publisher's ack.
//   sub (node 2's part): one sharded subscription per receiver, messages handled in order per channel
//       (a ChannelMessageQueue, as RouteListener does); the acks of a receiver are removed from Redis in one
//       script per 50 ms tick (ZREM + HDEL per row), as DeliveryMarks' Settle does.
// No MQTT, no routing, no rules. tools/bench-cluster.sh PART=floor runs it next to the cluster;
// docs/performance.md, "The floor under a cross-node message".
//
//   Broker.RedisFloor sub --redis 127.0.0.1:6379 [--clients 50]
//   Broker.RedisFloor pub --redis 127.0.0.1:6379 [--clients 50] [--rate 5000] [--warmup 2] [--duration 10] [--size 160] [--pids 123,456]
var opt = Options.Parse(args);
if (opt is null)
{
    Console.Error.WriteLine("usage: Broker.RedisFloor sub|pub --redis HOST:PORT [--clients N] [--rate R] [--warmup S] [--duration S] [--size B] [--pids P,P]");
    return 2;
}

using var redis = await ConnectionMultiplexer.ConnectAsync(opt.Redis);
return opt.Role == "sub" ? await Floor.SubscribeAsync(redis, opt) : await Floor.PublishAsync(redis, opt);

sealed record Options(string Role, string Redis, int Clients, double Rate, double Warmup, double Duration, int Size, int[] Pids, string Mode)
{
    public static Options? Parse(string[] args)
    {
        if (args.Length < 1 || args[0] is not ("sub" or "pub"))
        {
            return null;
        }

        var o = new Options(args[0], "", 50, 5000, 2, 10, 160, [], "script");
        for (var i = 1; i + 1 < args.Length; i += 2)
        {
            var v = args[i + 1];
            o = args[i] switch
            {
                "--redis" => o with { Redis = v },
                "--clients" => o with { Clients = int.Parse(v) },
                "--rate" => o with { Rate = double.Parse(v) },
                "--warmup" => o with { Warmup = double.Parse(v) },
                "--duration" => o with { Duration = double.Parse(v) },
                "--size" => o with { Size = Math.Max(Header.Size, int.Parse(v)) },
                "--mode" => o with { Mode = v is "script" or "batch" or "none" ? v : throw new ArgumentException("--mode script|batch|none") },
                "--pids" => o with { Pids = v.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray() },
                _ => throw new ArgumentException($"unknown option {args[i]}"),
            };
        }

        return o.Redis == "" ? null : o;
    }
}

/// <summary>A message's first bytes: when it was sent (Stopwatch ticks, one clock for every process of the host), whether it is measured, its id.</summary>
static class Header
{
    public const int Size = 17;
    public const byte Warmup = 0, Measured = 1, End = 2;

    public static byte[] Write(long sentTicks, byte kind, long id, int size)
    {
        var blob = new byte[size];
        BinaryPrimitives.WriteInt64LittleEndian(blob, sentTicks);
        blob[8] = kind;
        BinaryPrimitives.WriteInt64LittleEndian(blob.AsSpan(9), id);
        return blob;
    }
}

static class Floor
{
    const string Store = """
        local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
        redis.call('ZADD', KEYS[2], seq, ARGV[1])
        redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
        redis.call('SPUBLISH', ARGV[3], ARGV[2])
        return 1
        """;

    // --mode batch: the messages due in one pacing tick in one call (KEYS: 3 per message; ARGV: 3 per message).
    const string StoreBatch = """
        for i = 0, #ARGV / 3 - 1 do
          local seq = redis.call('HINCRBY', KEYS[3 * i + 1], 'seq', 1)
          redis.call('ZADD', KEYS[3 * i + 2], seq, ARGV[3 * i + 1])
          redis.call('HSET', KEYS[3 * i + 3], ARGV[3 * i + 1], ARGV[3 * i + 2])
          redis.call('SPUBLISH', ARGV[3 * i + 3], ARGV[3 * i + 2])
        end
        return 1
        """;

    const string Settle = """
        for _, id in ipairs(ARGV) do
          redis.call('ZREM', KEYS[1], id)
          redis.call('HDEL', KEYS[2], id)
        end
        return 1
        """;

    // Every key of one receiver in one hash slot, as the store's keys of one client id are.
    static RedisKey[] Keys(int i) => [$"fs:{{c/floor-{i}}}", $"fq:{{c/floor-{i}}}", $"fm:{{c/floor-{i}}}"];
    static RedisChannel Channel(int i) => RedisChannel.Sharded($"fr:{{c/floor-{i}}}");

    public static async Task<int> SubscribeAsync(ConnectionMultiplexer redis, Options o)
    {
        var db = redis.GetDatabase();
        var pending = Enumerable.Range(0, o.Clients).Select(_ => new List<RedisValue>()).ToArray();
        var latencies = new List<long>(capacity: (int)(o.Rate * o.Duration) + 1024);
        var ended = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        for (var i = 0; i < o.Clients; i++)
        {
            var receiver = i;
            var queue = await redis.GetSubscriber().SubscribeAsync(Channel(i));
            queue.OnMessage(m =>
            {
                var blob = (byte[])m.Message!;
                var now = Stopwatch.GetTimestamp();
                if (blob[8] == Header.End)
                {
                    if (Interlocked.Increment(ref ended) == o.Clients)
                    {
                        done.TrySetResult();
                    }

                    return;
                }

                if (blob[8] == Header.Measured)
                {
                    var micros = (now - BinaryPrimitives.ReadInt64LittleEndian(blob)) * 1_000_000 / Stopwatch.Frequency;
                    lock (latencies)
                    {
                        latencies.Add(micros);
                    }
                }

                lock (pending[receiver])
                {
                    pending[receiver].Add(BinaryPrimitives.ReadInt64LittleEndian(blob.AsSpan(9)));
                }
            });
        }

        Console.WriteLine("ready");
        using var tick = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
        var settling = Task.Run(async () =>
        {
            while (await tick.WaitForNextTickAsync())
            {
                for (var i = 0; i < o.Clients; i++)
                {
                    RedisValue[] ids;
                    lock (pending[i])
                    {
                        if (pending[i].Count == 0)
                        {
                            continue;
                        }

                        ids = [.. pending[i]];
                        pending[i].Clear();
                    }

                    var keys = Keys(i);
                    _ = db.ScriptEvaluateAsync(Settle, [keys[1], keys[2]], ids);
                }
            }
        });

        await done.Task;
        tick.Dispose();
        await settling;
        latencies.Sort();
        double At(double q) => latencies.Count == 0 ? double.NaN : latencies[Math.Min(latencies.Count - 1, (int)Math.Ceiling(q * latencies.Count) - 1)] / 1000.0;
        Console.WriteLine($"received {latencies.Count} measured messages: p50 {At(0.50):0.000} ms  p99 {At(0.99):0.000} ms  max {At(1.0):0.000} ms");
        Console.WriteLine(FormattableString.Invariant($"{{\"received\":{latencies.Count},\"p50_ms\":{At(0.50):0.000},\"p99_ms\":{At(0.99):0.000}}}"));
        return 0;
    }

    public static async Task<int> PublishAsync(ConnectionMultiplexer redis, Options o)
    {
        var db = redis.GetDatabase();
        await db.ScriptEvaluateAsync(Store, Keys(0), ["warm", Header.Write(0, Header.Warmup, -1, o.Size), "floor-none"]);
        long acked = 0, failed = 0, sent = 0;
        var outstanding = new CountdownEvent(1);
        var start = Stopwatch.GetTimestamp();
        var windowStart = start + (long)(o.Warmup * Stopwatch.Frequency);
        var windowEnd = windowStart + (long)(o.Duration * Stopwatch.Frequency);
        (long Ticks, double Self)? cpuAtStart = null;
        var others = new ProcessProbe(o.Pids);
        var othersAtStart = Array.Empty<double>();

        // One pacing loop, as Broker.Bench's fixed rate: every millisecond, what is due, round robin over the receivers.
        long due = 0;
        while (true)
        {
            var now = Stopwatch.GetTimestamp();
            if (now >= windowEnd)
            {
                break;
            }

            if (cpuAtStart is null && now >= windowStart)
            {
                cpuAtStart = (now, Process.GetCurrentProcess().TotalProcessorTime.TotalMicroseconds);
                othersAtStart = others.CpuSecondsEach();
            }

            var target = (long)((now - start) / (double)Stopwatch.Frequency * o.Rate);
            List<RedisKey> batchKeys = [];
            List<RedisValue> batchArgs = [];
            for (; due < target; due++)
            {
                var i = (int)(due % o.Clients);
                var kind = now >= windowStart ? Header.Measured : Header.Warmup;
                var blob = Header.Write(Stopwatch.GetTimestamp(), kind, due, o.Size);
                outstanding.AddCount();
                if (kind == Header.Measured)
                {
                    sent++;
                }

                if (o.Mode == "none")
                {
                    Interlocked.Increment(ref acked);
                    outstanding.Signal();
                }
                else if (o.Mode == "batch")
                {
                    batchKeys.AddRange(Keys(i));
                    batchArgs.AddRange([due, blob, Channel(i).ToString()]);
                }
                else
                {
                    _ = db.ScriptEvaluateAsync(Store, Keys(i), [due, blob, Channel(i).ToString()]).ContinueWith(t =>
                    {
                        Interlocked.Increment(ref t.IsCompletedSuccessfully ? ref acked : ref failed);
                        outstanding.Signal();
                    }, TaskContinuationOptions.ExecuteSynchronously);
                }
            }

            if (batchArgs.Count > 0)
            {
                var count = batchArgs.Count / 3;
                _ = db.ScriptEvaluateAsync(StoreBatch, [.. batchKeys], [.. batchArgs]).ContinueWith(t =>
                {
                    Interlocked.Add(ref t.IsCompletedSuccessfully ? ref acked : ref failed, count);
                    outstanding.Signal(count);
                }, TaskContinuationOptions.ExecuteSynchronously);
            }

            await Task.Delay(1);
        }

        var end = Stopwatch.GetTimestamp();
        var self = Process.GetCurrentProcess().TotalProcessorTime.TotalMicroseconds - cpuAtStart!.Value.Self;
        var seconds = (end - cpuAtStart.Value.Ticks) / (double)Stopwatch.Frequency;
        var perMsg = new List<double> { self / sent };
        perMsg.AddRange(others.CpuSecondsEach().Zip(othersAtStart, (atEnd, atStart) => (atEnd - atStart) * 1e6 / sent));

        outstanding.Signal();
        outstanding.Wait(TimeSpan.FromSeconds(10));
        for (var i = 0; i < o.Clients; i++)
        {
            await redis.GetSubscriber().PublishAsync(Channel(i), Header.Write(0, Header.End, -1, o.Size));
        }

        Console.WriteLine($"sent {sent} measured messages in {seconds:0.0} s ({sent / seconds:0} /s), acked {Interlocked.Read(ref acked)}, failed {Interlocked.Read(ref failed)}");
        var each = string.Join(", ", perMsg.Select(v => v.ToString("0.0", CultureInfo.InvariantCulture)));
        Console.WriteLine($"CPU µs per measured message (this process, then --pids {string.Join(",", o.Pids)}): {each}");
        Console.WriteLine($"{{\"mode\":\"{o.Mode}\",\"sent\":{sent},\"msgs_per_s\":{(sent / seconds).ToString("0", CultureInfo.InvariantCulture)},\"failed\":{Interlocked.Read(ref failed)},\"cpu_us_each\":[{each}]}}");
        return failed == 0 ? 0 : 1;
    }
}
