# partner_sdk example: accept each assignment, report a call and the payment, close the case.
import asyncio
import os

from partner_sdk import CaseAssigned, PartnerClient


async def main(limit: int = int(os.environ.get("EXAMPLE_LIMIT", "1"))) -> None:
    url, ns = os.environ["ONEWINDOW_PARTNER_URL"], os.environ.get("ONEWINDOW_NAMESPACE", "")
    async with PartnerClient(url, namespace=ns) as client:  # e.g. amqp://acme-de:pw@host/
        async for delivery in client.deliveries(limit=limit, idle_timeout=60):
            if isinstance(case := delivery.message, CaseAssigned):
                await client.accept(case.case_id, case.assignment_id)
                await client.report_activity(case.case_id, "call", "right_party_contact")
                await client.report_payment(case.case_id, case.total, case.currency)
                await client.close(case.case_id, "paid")
            await delivery.ack()  # after handling: a crash before this means redelivery


asyncio.run(main())
