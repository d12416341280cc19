using Microsoft.Diagnostics.Runtime;

// Broker.HeapStat <pid> <out.tsv>
// Suspends the process for a moment, walks the managed heap from its roots (so only live objects
// count, whatever the GC has not collected yet) and writes "count<TAB>bytes<TAB>type" per type,
// largest first. tools/heap-per-connection.sh diffs two such snapshots.
if (args.Length != 2 || !int.TryParse(args[0], out var pid))
{
    Console.Error.WriteLine("usage: Broker.HeapStat <pid> <out.tsv>");
    return 2;
}

using var target = DataTarget.AttachToProcess(pid, suspend: true);
var clr = target.ClrVersions[0];
// The DAC of the runtime the broker runs on is installed next to it; no symbol server here.
var dac = Path.Combine(Path.GetDirectoryName(clr.ModuleInfo.FileName)!, "libmscordaccore.so");
using var runtime = File.Exists(dac) ? clr.CreateRuntime(dac, ignoreMismatch: true) : clr.CreateRuntime();
var heap = runtime.Heap;

var seen = new HashSet<ulong>();
var pending = new Stack<ulong>();
foreach (var root in heap.EnumerateRoots())
{
    if (root.Object.Address != 0 && seen.Add(root.Object.Address))
    {
        pending.Push(root.Object.Address);
    }
}

var byType = new Dictionary<string, (long Count, long Bytes)>();
while (pending.Count > 0)
{
    var obj = heap.GetObject(pending.Pop());
    if (!obj.IsValid || obj.Type is null)
    {
        continue;
    }

    var name = obj.Type.Name ?? "?";
    byType.TryGetValue(name, out var s);
    byType[name] = (s.Count + 1, s.Bytes + (long)obj.Size);
    foreach (var reference in obj.EnumerateReferenceAddresses(carefully: false, considerDependantHandles: true))
    {
        if (reference != 0 && seen.Add(reference))
        {
            pending.Push(reference);
        }
    }
}

using (var output = new StreamWriter(args[1]))
{
    foreach (var (name, (count, bytes)) in byType.OrderByDescending(t => t.Value.Bytes))
    {
        output.WriteLine($"{count}\t{bytes}\t{name}");
    }
}

// What the GC holds besides the live objects (RSS is more than the live heap): objects not collected
// yet, free space between objects, and committed memory with no object in it.
long all = 0, free = 0;
foreach (var obj in heap.EnumerateObjects())
{
    if (obj.IsFree)
    {
        free += (long)obj.Size;
    }
    else
    {
        all += (long)obj.Size;
    }
}

var committed = heap.Segments.Sum(s => (long)s.CommittedMemory.Length);
Console.WriteLine($"live objects {byType.Values.Sum(v => v.Count)}, bytes {byType.Values.Sum(v => v.Bytes)}; " +
    $"objects live or not yet collected {all}, free space {free}, committed {committed}");
return 0;
