using MQTTnet.Protocol;

namespace Broker.Engine.Connections;

/// <summary>One place that maps a v5 reason to what a v3.1.1 client can be told.</summary>
internal static class ReasonCodes
{
    /// <summary>v3.1.1 has six CONNACK return codes [MQTT-3.2.2.3]; anything else about rights maps to "not authorized".</summary>
    public static MqttConnectReturnCode ToV3(MqttConnectReasonCode code) => code switch
    {
        MqttConnectReasonCode.Success => MqttConnectReturnCode.ConnectionAccepted,
        MqttConnectReasonCode.UnsupportedProtocolVersion => MqttConnectReturnCode.ConnectionRefusedUnacceptableProtocolVersion,
        MqttConnectReasonCode.ClientIdentifierNotValid => MqttConnectReturnCode.ConnectionRefusedIdentifierRejected,
        MqttConnectReasonCode.ServerUnavailable or MqttConnectReasonCode.ServerBusy or MqttConnectReasonCode.UseAnotherServer
            or MqttConnectReasonCode.ServerMoved or MqttConnectReasonCode.QuotaExceeded => MqttConnectReturnCode.ConnectionRefusedServerUnavailable,
        MqttConnectReasonCode.BadUserNameOrPassword or MqttConnectReasonCode.BadAuthenticationMethod => MqttConnectReturnCode.ConnectionRefusedBadUsernameOrPassword,
        _ => MqttConnectReturnCode.ConnectionRefusedNotAuthorized,
    };

    public static MqttPubAckReasonCode ToPubAck(Policy.PolicyDecision decision) => decision switch
    {
        Policy.PolicyDecision.Allow => MqttPubAckReasonCode.Success,
        Policy.PolicyDecision.TopicInvalid => MqttPubAckReasonCode.TopicNameInvalid,
        Policy.PolicyDecision.QuotaExceeded => MqttPubAckReasonCode.QuotaExceeded,
        _ => MqttPubAckReasonCode.NotAuthorized,
    };

    public static MqttSubscribeReasonCode ToSubAck(Policy.PolicyDecision decision) => decision switch
    {
        Policy.PolicyDecision.TopicInvalid => MqttSubscribeReasonCode.TopicFilterInvalid,
        Policy.PolicyDecision.QuotaExceeded => MqttSubscribeReasonCode.QuotaExceeded,
        _ => MqttSubscribeReasonCode.NotAuthorized,
    };

    public static MqttSubscribeReasonCode Granted(MqttQualityOfServiceLevel qos) => qos switch
    {
        MqttQualityOfServiceLevel.AtMostOnce => MqttSubscribeReasonCode.GrantedQoS0,
        MqttQualityOfServiceLevel.AtLeastOnce => MqttSubscribeReasonCode.GrantedQoS1,
        _ => MqttSubscribeReasonCode.GrantedQoS2,
    };
}
