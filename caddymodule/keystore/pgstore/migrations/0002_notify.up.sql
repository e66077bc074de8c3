-- Every change is announced on the channel spk_changes when its transaction
-- commits (a rolled-back change announces nothing), so that instances
-- listening there apply it at once instead of at their next read of the
-- log. The payload is "<seq>:<kind>:<account id>": nothing derived from a
-- key. An account id too long for a payload is left out (then listeners
-- read the log).
CREATE FUNCTION spk_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('spk_changes', NEW.seq::text || ':' || NEW.kind ||
		CASE WHEN octet_length(NEW.account_id) <= 1000 THEN ':' || NEW.account_id ELSE '' END);
	RETURN NULL;
END
$$;

CREATE TRIGGER changes_notify AFTER INSERT ON changes
	FOR EACH ROW EXECUTE FUNCTION spk_notify_change();
