using System.Diagnostics;
using System.Globalization;

namespace Broker.Bench;

/// <summary>
/// Latency samples of the measured window (microseconds), recorded lock-free into a fixed array;
/// plus the counters every scenario shares.
/// </summary>
internal sealed class Measurements(long maxSamples)
{
    readonly long[] _samples = new long[maxSamples];
    long _count;
    long _received;
    long _sent;
    long _acked;
    long _failed;
    long _skipped;

    public long WindowStart { get; set; } = long.MaxValue;
    public long WindowEnd { get; set; } = long.MaxValue;

    public long Received => Interlocked.Read(ref _received);
    public long Sent => Interlocked.Read(ref _sent);
    public long Acked => Interlocked.Read(ref _acked);
    public long Failed => Interlocked.Read(ref _failed);
    public long Skipped => Interlocked.Read(ref _skipped);
    public long AllReceived;

    public void Published() => Interlocked.Increment(ref _sent);
    public void Acknowledged() => Interlocked.Increment(ref _acked);
    public void PublishFailed() => Interlocked.Increment(ref _failed);
    /// <summary>Fixed-rate mode: the publisher's window was full, so a due message was not sent.</summary>
    public void Behind() => Interlocked.Increment(ref _skipped);

    /// <summary>Deliveries that arrived inside the window (throughput).</summary>
    public long DeliveredInWindow => Interlocked.Read(ref _delivered);
    long _delivered;

    /// <summary>A message of this run arrived: throughput counts arrivals in the window; latency and loss count messages sent in it.</summary>
    public void Arrived(long sentTicks)
    {
        Interlocked.Increment(ref AllReceived);
        var now = Stopwatch.GetTimestamp();
        if (now >= WindowStart && now < WindowEnd)
        {
            Interlocked.Increment(ref _delivered);
        }

        if (sentTicks < WindowStart || sentTicks >= WindowEnd)
        {
            return;
        }

        Interlocked.Increment(ref _received);
        var at = Interlocked.Increment(ref _count) - 1;
        if (at < _samples.Length)
        {
            _samples[at] = (now - sentTicks) * 1_000_000 / Stopwatch.Frequency;
        }
    }

    /// <summary>p50, p99, max in milliseconds.</summary>
    public (double P50, double P99, double Max) Percentiles()
    {
        var n = (int)Math.Min(Interlocked.Read(ref _count), _samples.Length);
        if (n == 0)
        {
            return (double.NaN, double.NaN, double.NaN);
        }

        var copy = _samples.AsSpan(0, n).ToArray();
        Array.Sort(copy);
        double At(double q) => copy[Math.Min(n - 1, (int)Math.Ceiling(q * n) - 1)] / 1000.0;
        return (At(0.50), At(0.99), copy[n - 1] / 1000.0);
    }

    public void AddLatency(long micros)
    {
        var at = Interlocked.Increment(ref _count) - 1;
        if (at < _samples.Length)
        {
            _samples[at] = micros;
        }
    }
}

/// <summary>CPU time and RSS of one or more processes from /proc (Linux), summed: a cluster's nodes and its Redis together.</summary>
internal sealed class ProcessProbe(IReadOnlyList<int> pids)
{
    static readonly double TicksPerSecond = 100; // USER_HZ; 100 on every Linux we run on

    public ProcessProbe(int pid)
        : this(pid > 0 ? [pid] : [])
    {
    }

    public bool Enabled => pids.Count > 0 && pids.All(pid => File.Exists($"/proc/{pid}/stat"));

    /// <summary>utime + stime in seconds, summed over the processes.</summary>
    public double CpuSeconds() => Enabled ? CpuSecondsEach().Sum() : double.NaN;

    /// <summary>utime + stime in seconds of each process, in the order given.</summary>
    public double[] CpuSecondsEach()
    {
        var each = new double[pids.Count];
        for (var i = 0; i < pids.Count; i++)
        {
            var stat = File.ReadAllText($"/proc/{pids[i]}/stat");
            // The command name may hold spaces: fields start after the last ')'.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            each[i] = (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / TicksPerSecond;
        }

        return each;
    }

    /// <summary>VmRSS in KiB, summed over the processes.</summary>
    public long RssKiB()
    {
        if (!Enabled)
        {
            return -1;
        }

        var total = 0L;
        foreach (var pid in pids)
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                {
                    total += long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);
                    break;
                }
            }
        }

        return total;
    }
}
