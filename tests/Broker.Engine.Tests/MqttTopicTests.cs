using Broker.Engine.Routing;

namespace Broker.Engine.Tests;

/// <summary>Topic names and filters as MQTT 3.1.1 / 5.0 §4.7 define them.</summary>
public sealed class MqttTopicTests
{
    [Theory]
    // exact
    [InlineData("a/b", "a/b", true)]
    [InlineData("a/b", "a/c", false)]
    [InlineData("a/b", "a/b/c", false)]
    [InlineData("a/b/c", "a/b", false)]
    [InlineData("a", "A", false)] // case-sensitive [MQTT-4.7.3-4]
    [InlineData("/a", "/a", true)]
    [InlineData("/a", "a", false)]
    // '+' one level [MQTT-4.7.1-3]
    [InlineData("a/+", "a/b", true)]
    [InlineData("a/+", "a/b/c", false)]
    [InlineData("a/+", "a", false)]
    [InlineData("a/+", "a/", true)] // an empty level is a level
    [InlineData("+/+", "/", true)]
    [InlineData("+", "/a", false)]
    [InlineData("/+", "/a", true)]
    [InlineData("+/b/+", "a/b/c", true)]
    [InlineData("+/b/+", "a/x/c", false)]
    // '#' parent and any number of levels [MQTT-4.7.1-2]
    [InlineData("#", "a", true)]
    [InlineData("#", "a/b/c", true)]
    [InlineData("#", "/", true)]
    [InlineData("a/#", "a", true)]
    [InlineData("a/#", "a/b", true)]
    [InlineData("a/#", "a/b/c", true)]
    [InlineData("a/#", "ab", false)]
    [InlineData("a/#", "b/a", false)]
    [InlineData("a/b/#", "a", false)]
    [InlineData("+/#", "a", true)]
    [InlineData("a/+/#", "a/b", true)]
    [InlineData("a/+/#", "a", false)]
    // '$' topics and leading wildcards [MQTT-4.7.2-1]
    [InlineData("#", "$SYS/x", false)]
    [InlineData("+/x", "$app/x", false)]
    [InlineData("+", "$app", false)]
    [InlineData("$SYS/#", "$SYS/x", true)]
    [InlineData("$app/+", "$app/x", true)]
    [InlineData("$app/x", "$app/x", true)]
    public void Matches_Table(string filter, string topic, bool expected)
    {
        Assert.Equal(expected, MqttTopic.Matches(filter, topic));
    }

    [Theory]
    [InlineData("a", true)]
    [InlineData("a/b/c", true)]
    [InlineData("/", true)]
    [InlineData("$SYS/x", true)]
    [InlineData(" ", true)]
    [InlineData("", false)] // [MQTT-4.7.3-1]
    [InlineData("a/+", false)] // no wildcards in a topic name [MQTT-3.3.2-2]
    [InlineData("a/#", false)]
    [InlineData("a+b", false)]
    [InlineData("a\0b", false)] // [MQTT-4.7.3-2]
    public void IsValidName_Table(string topic, bool expected)
    {
        Assert.Equal(expected, MqttTopic.IsValidName(topic));
    }

    [Theory]
    [InlineData("a", true)]
    [InlineData("#", true)]
    [InlineData("+", true)]
    [InlineData("a/#", true)]
    [InlineData("a/+/b", true)]
    [InlineData("+/+", true)]
    [InlineData("/#", true)]
    [InlineData("a//b", true)]
    [InlineData("", false)] // [MQTT-4.7.3-1]
    [InlineData("a/#/b", false)] // '#' last [MQTT-4.7.1-2]
    [InlineData("a#", false)] // '#' alone in its level [MQTT-4.7.1-2]
    [InlineData("#/", false)]
    [InlineData("a+", false)] // '+' alone in its level [MQTT-4.7.1-3]
    [InlineData("a/+b", false)]
    [InlineData("+a/b", false)]
    [InlineData("a\0", false)] // [MQTT-4.7.3-2]
    public void IsValidFilter_Table(string filter, bool expected)
    {
        Assert.Equal(expected, MqttTopic.IsValidFilter(filter));
    }

    [Theory]
    [InlineData("$share/g/t/#", true, "g", "t/#")]
    [InlineData("$share/group/a/+/b", true, "group", "a/+/b")]
    [InlineData("$share/g//x", true, "g", "/x")]
    [InlineData("$share//t", false, "", "")] // empty share name [MQTT-4.8.2-1]
    [InlineData("$share/g", false, "", "")] // no filter [MQTT-4.8.2-2]
    [InlineData("$share/g/", false, "", "")]
    [InlineData("$share/g+/t", false, "", "")] // wildcard in the share name [MQTT-4.8.2-2]
    [InlineData("$share/g#/t", false, "", "")]
    [InlineData("$shared/g/t", false, "", "")]
    [InlineData("t/#", false, "", "")]
    public void TryParseShared_Table(string filter, bool ok, string shareName, string inner)
    {
        Assert.Equal(ok, MqttTopic.TryParseShared(filter, out var name, out var innerFilter));
        Assert.Equal((shareName, inner), (name, innerFilter));
    }
}
