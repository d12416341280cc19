using System.Globalization;

namespace Broker.Microbench;

/// <summary>Names after the IMS conventions: users <c>user{n}</c>, devices <c>GID_IMS@@@user{n}-phone</c>, groups <c>group{n}</c>, all under <c>IMS/</c>.</summary>
internal static class Data
{
    public const int Users = 10_000;
    public const int Groups = 300;
    public const int MembersPerGroup = 20;

    public static string User(int i) => "user" + i.ToString(CultureInfo.InvariantCulture);

    public static string Device(int i) => $"GID_IMS@@@{User(i)}-phone";

    public static string Group(int g) => "group" + g.ToString(CultureInfo.InvariantCulture);

    /// <summary>Members of group g: spread over the users, so a user is in a few groups.</summary>
    public static IEnumerable<int> Members(int g) => Enumerable.Range(0, MembersPerGroup).Select(k => (g * 37 + k * 499) % Users);
}
